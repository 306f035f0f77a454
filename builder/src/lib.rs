//! nib: builds immutable, reproducible controller images (see DESIGN.md).
//! `main.rs` only parses and dispatches; everything else lives here.

pub mod build;
pub mod cli;
pub mod error;
pub mod flash;
pub mod inspect;
pub mod outputs;
pub mod plan;
pub mod seed_cmd;
pub mod verify;
