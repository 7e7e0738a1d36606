//! Handlers: freedom, blackhole and dokodemo-door.
