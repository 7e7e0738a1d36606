#![doc = include_str!("../README.md")]

pub mod client;
mod conn;
pub mod engine;
pub mod error;
pub mod frame;
mod handler;
pub mod outbound;
mod send;
pub mod server;
pub mod settings;
pub mod stream;

pub use client::MuxClient;
pub use engine::Load;
pub use error::MuxError;
pub use frame::{Frame, FrameCodec, FrameKind, SessionId, Status};
pub use handler::SessionHandler;
pub use outbound::MuxOutbound;
pub use server::{
    is_mux_cool, mux_cool_destination, serve_mux, serve_mux_with, MuxServer, ServerHandle,
    MUX_COOL_DOMAIN, MUX_COOL_PORT,
};
pub use settings::{concurrency_from_config, ClientSettings, MuxSettings, ServerSettings};
pub use stream::MuxStream;
