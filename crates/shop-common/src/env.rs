//! Reading one environment variable: blank means unset, and a value that does not
//! parse is an error naming the variable. The bottom of the configuration: `config`
//! (the settings every service has) and `limits` (the gRPC server's limits) both read
//! their variables through it.

use std::str::FromStr;

/// A setting that could not be used. The message names the variable and what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// An environment variable, treating an empty or blank value as unset (so
/// `FOO=` in a compose file means "use the default").
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Parses `value` (from variable `name`) or returns `default` when unset.
pub fn parse_or<T>(name: &str, value: Option<String>, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match value {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| ConfigError(format!("{name}={raw:?} is not valid: {e}"))),
    }
}

/// [`parse_or`] for a setting that must be more than zero (a count, a timeout, an
/// interval): zero is refused with an error naming the variable.
pub fn parse_positive_or<T>(name: &str, value: Option<String>, default: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Default,
    T::Err: std::fmt::Display,
{
    let parsed = parse_or(name, value, default)?;
    if parsed <= T::default() {
        return Err(ConfigError(format!("{name} must be more than 0")));
    }
    Ok(parsed)
}
