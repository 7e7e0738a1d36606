//! The Rayback bridge: runs a V2Ray configuration that holds `reverse.bridges`.
//!
//! Thin by design: flags, configuration and the run loop live in
//! `rayback_app`, shared with the other binary.

fn main() -> std::process::ExitCode {
    rayback_app::cli::main(rayback_app::Role::Bridge)
}
