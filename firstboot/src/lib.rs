//! nib-firstboot: the node side of nib. Reads NoCloud role data and writes the
//! node's configuration (see builder/doc/DESIGN.md, "First boot").

pub mod apply;
pub mod cluster;
pub mod datasource;
pub mod fsutil;
pub mod pacemaker;
pub use nib_host::log;
pub mod node_state;
pub mod nssdb;
pub mod render;
pub mod reseed;
pub mod role;
pub mod seed;
pub mod status;

/// 2 when the error is the input's fault (role data or seed invalid, no
/// seed), else 1 (builder/doc/DESIGN.md, "Exit codes").
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|e| e.is::<role::RoleDataError>() || e.is::<datasource::SeedError>())
    {
        2
    } else {
        1
    }
}
