//! `mxguard passwd`: reads a password and prints its argon2id hash, the
//! value of an `[[account]]`'s `password` key.
//!
//! The password is one line of standard input (the line break is not part
//! of it), so that scripts can pipe it in: `printf '%s\n' "$pw" | mxguard
//! passwd`. When standard input is a terminal, the password is asked for
//! twice without echo, unless `--password-stdin` is given. An empty
//! password is refused.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context as _, bail};

/// Runs the subcommand; returns the exit code.
pub fn run(password_stdin: bool) -> i32 {
    match read_and_hash(password_stdin) {
        Ok(phc) => {
            println!("{phc}");
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn read_and_hash(password_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let password = if !password_stdin && stdin.is_terminal() {
        let first = prompt("Password: ")?;
        check(&first)?;
        let again = prompt("Again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    } else {
        read_line(&mut stdin.lock()).context("cannot read the password from standard input")?
    };
    hash_for_config(&password)
}

/// The hash of `password` for `account.password`; an empty password is
/// refused.
pub fn hash_for_config(password: &[u8]) -> anyhow::Result<String> {
    check(password)?;
    Ok(crate::auth::hash_password(password)?)
}

fn check(password: &[u8]) -> anyhow::Result<()> {
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(())
}

/// One line of `input`, without its line break (`\n` or `\r\n`).
fn read_line(input: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    input.read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// Asks for a line on the terminal (prompt on stderr) with echo off.
fn prompt(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{text}")?;
    stderr.flush()?;
    let line = {
        let _echo = EchoOff::new();
        read_line(&mut std::io::stdin().lock())
    };
    // The Enter the user typed was not echoed either.
    writeln!(stderr)?;
    Ok(line?)
}

/// Turns off the terminal echo of standard input while alive.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr and tcsetattr only read and write the termios
        // struct we own; fd 0 is standard input, a terminal here (and the
        // calls fail harmlessly when it is not).
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: as in `new`; restores the settings read there.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::verify_password;
    use mxguard_config::Secret;

    #[test]
    fn hash_round_trip() {
        let phc = hash_for_config(b"s3cret pass").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let secret = Secret::Argon2(phc.clone());
        assert!(verify_password(&secret, b"s3cret pass"));
        assert!(!verify_password(&secret, b"s3cret pas"));

        // The configuration takes it as a hash, without a warning.
        let text = format!(
            "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n[domains]\nlocal = [\"example.test\"]\n[[account]]\naddress = \"a@example.test\"\npassword = \"{phc}\"\n"
        );
        let cfg =
            mxguard_config::Config::parse(&text, std::path::Path::new("mxguard.toml")).unwrap();
        assert_eq!(cfg.accounts[0].password, Some(Secret::Argon2(phc)));
        assert!(
            !cfg.warnings().iter().any(|w| w.contains("password")),
            "{:?}",
            cfg.warnings()
        );
    }

    #[test]
    fn empty_is_refused() {
        assert!(hash_for_config(b"").is_err());
    }

    #[test]
    fn lines() {
        let mut input: &[u8] = b"pass word\r\nnext\n";
        assert_eq!(read_line(&mut input).unwrap(), b"pass word");
        assert_eq!(read_line(&mut input).unwrap(), b"next");
        assert_eq!(read_line(&mut input).unwrap(), b"");
        let mut input: &[u8] = b"no newline";
        assert_eq!(read_line(&mut input).unwrap(), b"no newline");
        let mut input: &[u8] = b"\n";
        assert_eq!(read_line(&mut input).unwrap(), b"");
    }
}
