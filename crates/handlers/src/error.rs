//! Why a handler could not be built from its settings. Runtime failures of
//! one connection are `io::Error`s logged at the connection's task.

/// A handler setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandlersError {
    #[error("dokodemo-door inbound {0:?} has no network to listen on")]
    NoNetwork(String),
}
