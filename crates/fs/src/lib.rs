//! Private directories and Unix sockets, created safely: the one place where lanyard decides
//! whether a directory it is about to keep secrets or sockets in can be trusted.
//!
//! A directory is trusted when it, and every directory on the way to it, is owned by this
//! process's effective uid or by root, and nobody else can write into it (an ancestor that others
//! can write into must have the sticky bit, as `/tmp` does, so that they cannot rename what we
//! own). Symbolic links on the way are followed only when they too are owned by us or root; their
//! targets are checked like any other path. Every check is made on an opened file descriptor, and
//! modes are set through that descriptor, so the inode checked is the inode changed: nothing here
//! chmods a path that could be a link.
//!
//! - [`private_dir`]: a data directory, 0700 (a wider existing one is narrowed).
//! - [`checked_dir`]: a directory created with a given mode; an existing one is used as it is if
//!   it is trusted.
//! - [`bind`]: a Unix socket with its final mode from the first instant (bound in a private
//!   staging directory, then renamed into place), in a checked directory; a stale socket is
//!   replaced, a live one refused.
//!
//! This crate must not read the environment or configuration, and must not know lanyard's
//! default paths: callers pass the path and the access they want.

mod dir;
mod error;
mod socket;

pub use dir::{Dir, checked_dir, private_dir};
pub use error::Error;
pub use socket::{Access, bind};

#[cfg(test)]
mod tests;
