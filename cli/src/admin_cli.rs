//! `kirikae status|promote|switchover --admin ADDR`: operator commands to running
//! nodes through their admin endpoints (`--admin` on `kirikae primary|backup`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use kirikae::replicate::{admin_request, PeerKey};

use crate::CliError;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The node's admin endpoint (`HOST:PORT`).
    #[arg(long, value_parser = crate::nodes::resolve)]
    admin: SocketAddr,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The backup's admin endpoint (`HOST:PORT`).
    #[arg(long, value_parser = crate::nodes::resolve)]
    admin: SocketAddr,
    /// The pair's key file (the admin token is derived from it).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Refuse unless the backup holds exactly up to this sequence.
    #[arg(long)]
    at_seq: Option<u64>,
}

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    /// The primary's admin endpoint (`HOST:PORT`).
    #[arg(long, value_parser = crate::nodes::resolve)]
    admin: SocketAddr,
    /// The backup's admin endpoint (`HOST:PORT`).
    #[arg(long, value_parser = crate::nodes::resolve)]
    backup_admin: SocketAddr,
    /// The pair's key file (the admin token is derived from it).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// How long the primary may take to hand over (drain and be acknowledged).
    #[arg(long, default_value_t = 5_000, value_parser = crate::arg_ranges::failover_ms)]
    timeout_ms: u64,
}

fn token(key_file: Option<&PathBuf>) -> Result<Option<String>, CliError> {
    key_file
        .map(|p| PeerKey::from_file(p).map(|k| k.admin_token()))
        .transpose()
        .map_err(Into::into)
}

/// One request; a status other than 200 is an error carrying the node's answer.
fn ask(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> Result<String, CliError> {
    let (status, body) = admin_request(addr, method, target, token)?;
    if status != 200 {
        return Err(CliError::Usage(format!(
            "{method} {target} at {addr}: {status} {}",
            body.trim()
        )));
    }
    Ok(body)
}

pub fn status(args: &StatusArgs) -> Result<(), CliError> {
    say!("{}", ask(args.admin, "GET", "/status", None)?.trim());
    Ok(())
}

pub fn promote(args: &PromoteArgs) -> Result<(), CliError> {
    let token = token(args.key_file.as_ref())?;
    let target = match args.at_seq {
        Some(n) => format!("/promote?at_seq={n}"),
        None => "/promote".to_owned(),
    };
    say!(
        "{}",
        ask(args.admin, "POST", &target, token.as_deref())?.trim()
    );
    Ok(())
}

/// The primary hands over (drains, refuses new commits, waits for the backup's
/// acknowledgement of everything); the backup is promoted at exactly that sequence.
pub fn switchover(args: &SwitchoverArgs) -> Result<(), CliError> {
    let token = token(args.key_file.as_ref())?;
    let started = std::time::Instant::now();
    let target = format!("/hand-over?timeout_ms={}", args.timeout_ms);
    let handed: serde_json::Value =
        serde_json::from_str(&ask(args.admin, "POST", &target, token.as_deref())?)?;
    let at_seq = handed["at_seq"].as_u64().ok_or_else(|| {
        CliError::Usage(format!(
            "the primary's hand-over named no sequence: {handed}"
        ))
    })?;
    say!("primary at {} handed over at sequence {at_seq}", args.admin);
    let target = format!("/promote?at_seq={at_seq}");
    let promoted = ask(args.backup_admin, "POST", &target, token.as_deref())?;
    say!(
        "backup at {} promoted: {} ({:.1} ms)",
        args.backup_admin,
        promoted.trim(),
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
