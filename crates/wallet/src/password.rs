//! Where a password comes from: `--password-file FILE`, the `BASED_PASSWORD` environment
//! variable (scripts and tests), or a prompt on the terminal.

use std::path::PathBuf;

use zeroize::Zeroizing;

/// The environment variable holding a password for non-interactive use.
pub const PASSWORD_ENV: &str = "BASED_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("read the password file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("the password file {0} is empty")]
    EmptyFile(PathBuf),
    #[error("${PASSWORD_ENV} is not valid UTF-8")]
    EnvNotUnicode,
    #[error(
        "no terminal to ask for the password: pass --password-file FILE or set ${PASSWORD_ENV}"
    )]
    NoTerminal,
    #[error("read the password from the terminal: {0}")]
    Prompt(std::io::Error),
    #[error("the passwords do not match")]
    Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The first line of a file (a trailing newline is not part of the password).
    File(PathBuf),
    /// The value of `BASED_PASSWORD`.
    Env(String),
    /// Asked on the terminal, without echo.
    Prompt,
}

impl PasswordSource {
    /// `--password-file` if given, else `BASED_PASSWORD` if set, else a prompt.
    pub fn choose(file: Option<PathBuf>) -> Result<PasswordSource, PasswordError> {
        if let Some(path) = file {
            return Ok(PasswordSource::File(path));
        }
        match std::env::var(PASSWORD_ENV) {
            Ok(value) => Ok(PasswordSource::Env(value)),
            Err(std::env::VarError::NotPresent) => Ok(PasswordSource::Prompt),
            Err(std::env::VarError::NotUnicode(_)) => Err(PasswordError::EnvNotUnicode),
        }
    }

    /// Reads a password to unlock a key; `prompt` names the key.
    pub fn read(&self, prompt: &str) -> Result<Zeroizing<String>, PasswordError> {
        match self {
            PasswordSource::File(path) => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|source| PasswordError::File { path: path.clone(), source })?,
                );
                let line = text.lines().next().unwrap_or("");
                if line.is_empty() {
                    return Err(PasswordError::EmptyFile(path.clone()));
                }
                Ok(Zeroizing::new(line.to_string()))
            }
            PasswordSource::Env(value) => Ok(Zeroizing::new(value.clone())),
            PasswordSource::Prompt => ask(prompt),
        }
    }

    /// Reads a password for a new key file: a prompt asks twice.
    pub fn read_new(&self, prompt: &str) -> Result<Zeroizing<String>, PasswordError> {
        let password = self.read(prompt)?;
        if *self == PasswordSource::Prompt && *ask("Repeat the password: ")? != *password {
            return Err(PasswordError::Mismatch);
        }
        Ok(password)
    }
}

fn ask(prompt: &str) -> Result<Zeroizing<String>, PasswordError> {
    // rpassword reads from the controlling terminal, whatever standard input is.
    if std::fs::File::open("/dev/tty").is_err() {
        return Err(PasswordError::NoTerminal);
    }
    rpassword::prompt_password(prompt).map(Zeroizing::new).map_err(PasswordError::Prompt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "correct horse\nignored\n").unwrap();
        let source = PasswordSource::choose(Some(path.clone())).unwrap();
        assert_eq!(source.read("?").unwrap().as_str(), "correct horse");
        assert_eq!(source.read_new("?").unwrap().as_str(), "correct horse");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(source.read("?"), Err(PasswordError::EmptyFile(_))));
        let missing = PasswordSource::File(dir.path().join("missing"));
        let error = missing.read("?").unwrap_err().to_string();
        assert!(error.starts_with("read the password file"), "{error}");
        assert_eq!(PasswordSource::Env("x".into()).read("?").unwrap().as_str(), "x");
    }
}
