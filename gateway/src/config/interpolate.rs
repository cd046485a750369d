//! `${VAR}` interpolation of configuration values, so secrets stay in the environment.

use std::collections::HashMap;

/// Where interpolated values come from: the process environment, plus built-in names.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    overrides: HashMap<String, String>,
}

/// The built-in variable holding the path of the running `mcp-gateway` binary, so an example
/// config can start the bundled demo server without knowing where cargo put the binary.
pub const SELF_EXE_VAR: &str = "MCP_GATEWAY_EXE";

impl Vars {
    /// The process environment plus the built-in variables.
    pub fn from_env() -> Self {
        let mut overrides = HashMap::new();
        if std::env::var_os(SELF_EXE_VAR).is_none()
            && let Ok(exe) = std::env::current_exe()
        {
            overrides.insert(SELF_EXE_VAR.to_owned(), exe.to_string_lossy().into_owned());
        }
        Self { overrides }
    }

    /// Fixed variables only, for tests.
    pub fn fixed(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            overrides: vars.into_iter().collect(),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}

/// Why a value could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("environment variable `{0}` is not set")]
    Unset(String),
    #[error("unterminated `${{` (write `$${{` for a literal `${{`)")]
    Unterminated,
    #[error("`${{{0}}}` is not a valid variable name")]
    BadName(String),
}

/// Replaces every `${NAME}` in `input` with the variable's value; `$${` is a literal `${`.
pub fn interpolate(input: &str, vars: &Vars) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(literal) = after.strip_prefix("${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(InterpolateError::Unterminated)?;
            let name = &body[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(InterpolateError::BadName(name.to_owned()));
            }
            out.push_str(
                &vars
                    .get(name)
                    .ok_or_else(|| InterpolateError::Unset(name.to_owned()))?,
            );
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, InterpolateError>) {
        let vars = Vars::fixed([("TOKEN".to_owned(), "s3cret".to_owned())]);
        assert_eq!(
            interpolate(input, &vars),
            expected.map(str::to_owned),
            "{input}"
        );
    }

    #[test]
    fn interpolation() {
        check("plain", Ok("plain"));
        check("Bearer ${TOKEN}", Ok("Bearer s3cret"));
        check("${TOKEN}${TOKEN}", Ok("s3crets3cret"));
        check("cost $5", Ok("cost $5"));
        check("$${TOKEN}", Ok("${TOKEN}"));
        check("trailing $", Ok("trailing $"));
        check(
            "${MCP_GATEWAY_TEST_UNSET_VARIABLE}",
            Err(InterpolateError::Unset(
                "MCP_GATEWAY_TEST_UNSET_VARIABLE".into(),
            )),
        );
        check("${TOKEN", Err(InterpolateError::Unterminated));
        check(
            "${BAD-NAME}",
            Err(InterpolateError::BadName("BAD-NAME".into())),
        );
        check("${}", Err(InterpolateError::BadName(String::new())));
    }
}
