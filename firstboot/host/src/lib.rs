//! The lowest layer of nib's workspace, shared by the builder (`nib`), the
//! node agent (`nib-firstboot`) and the end-to-end suite: how a program of
//! ours runs another program ([`cmd`]), writes a file ([`write`]) and logs
//! a line ([`log`]). One way each, so they behave the same everywhere.

pub mod cmd;
pub mod log;
pub mod write;

pub use cmd::{Cmd, Error as CmdError, Output, Status};
pub use write::{write_atomic, write_many, FileWrite, WriteOutcome};
