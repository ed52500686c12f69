//! tokenward: scoped access tokens for git and Mercurial.
//!
//! The library has two layers. The light layer (always built) holds what the
//! git helper needs and nothing more: the token model and matching rules
//! ([`token`]), the daemon's wire protocol ([`protocol`]), git's credential
//! protocol ([`gitcred`]), where the socket lives ([`paths`]) and a blocking
//! client ([`client`]). The `daemon` feature adds the vault backends, the
//! index file, the daemon, the relay and the CLI.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod ci;
pub mod client;
pub mod gitcred;
pub mod paths;
pub mod protocol;
pub mod secret;
pub mod token;

#[cfg(feature = "daemon")]
pub mod relay;

#[cfg(feature = "daemon")]
pub mod atomic;
#[cfg(feature = "daemon")]
pub mod cli;
#[cfg(feature = "daemon")]
pub mod completions;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod doctor;
#[cfg(feature = "daemon")]
pub mod fingerprint;
#[cfg(feature = "daemon")]
pub mod hgsetup;
#[cfg(feature = "daemon")]
pub mod index;
#[cfg(feature = "daemon")]
pub mod rhoderc;
#[cfg(feature = "daemon")]
pub mod setup;
#[cfg(feature = "daemon")]
pub mod vault;
#[cfg(feature = "daemon")]
pub mod weburl;
