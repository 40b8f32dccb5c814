//! The PostgreSQL wire protocol as pgsplit needs it: framing, the startup packet, client and server
//! authentication, the messages pgsplit writes itself, and SQLSTATE errors. Knows bytes, never pools or routing.

pub mod auth;
pub mod error;
pub mod extended;
pub mod frame;
pub mod io;
pub mod login;
pub mod messages;
pub mod scram;
pub mod startup;
pub mod transport;
