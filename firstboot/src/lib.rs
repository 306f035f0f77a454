//! nib-firstboot: the node side of nib. Reads NoCloud role data and writes the
//! node's configuration (see DESIGN.md, "First boot").

pub mod cluster;
pub mod fsutil;
pub mod log;
pub mod role;
pub mod runner;
