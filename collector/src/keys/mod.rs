//! API keys: roles and what they allow, secret tokens, and the file-backed key store shared by the
//! running collector and the `codestax-collector keys` CLI.

mod cli;
mod error;
mod event;
mod role;
mod store;
mod token;

pub use cli::{KeysCommand, run_keys_command, run_keys_command_with};
pub(crate) use cli::{check_list_org, print_created, print_list, print_revoked};
pub use error::KeyError;
pub use event::{COLLECTOR_ACTOR_ID, KeyEvent, KeyEventKind};
pub use role::{Role, UnknownRole};
pub use store::{
    KEYS_FILE, KeyInfo, KeyStore, LOCK_FILE, RELOAD_INTERVAL, STORE_VERSION, SharedKey,
};
pub(crate) use store::{check_new_key, new_key_id};
pub use token::{TOKEN_PREFIX, Token};
