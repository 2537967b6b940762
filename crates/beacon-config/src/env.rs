//! `${VAR}` expansion in string values, applied to the TOML tree before it is typed.

use crate::FieldError;

/// Expands `${VAR}` and `${VAR:-default}` in every string of `value`, in place.
///
/// `$$` is a literal `$`. A variable that is unset (and has no default) is a
/// [`FieldError`] naming the key that referenced it; every such error is collected.
pub fn expand_tree(
    value: &mut toml::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    match value {
        toml::Value::String(s) => match expand_str(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => errors.push(FieldError::new(path, message)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, lookup, &format!("{path}[{i}]"), errors);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                expand_tree(item, lookup, &child, errors);
            }
        }
        _ => {}
    }
}

/// Expands one string; returns a message naming the missing variable on failure.
pub fn expand_str(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("unterminated `${` in value".to_string());
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            match lookup(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(&v),
                None => match default {
                    Some(d) => out.push_str(d),
                    None => {
                        return Err(format!(
                            "environment variable `{name}` is not set (referenced as `${{{name}}}`)"
                        ))
                    }
                },
            }
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

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        assert_eq!(
            expand_str("Bearer ${KEY}", &env).as_deref(),
            Ok("Bearer sk-123")
        );
        assert_eq!(expand_str("${NOPE:-x}", &env).as_deref(), Ok("x"));
        assert_eq!(expand_str("${EMPTY:-d}", &env).as_deref(), Ok("d"));
        assert_eq!(expand_str("cost $$5 $x", &env).as_deref(), Ok("cost $5 $x"));
        assert_eq!(expand_str("plain", &env).as_deref(), Ok("plain"));
    }

    #[test]
    fn missing_variable_names_it() {
        let err = expand_str("${MISSING}", &env).unwrap_err();
        assert!(err.contains("MISSING"), "{err}");
        assert!(expand_str("${UNTERMINATED", &env).is_err());
        assert!(expand_str("${bad name}", &env).is_err());
    }

    #[test]
    fn tree_errors_name_the_field() {
        let mut v: toml::Value = toml::from_str("[a]\nb = [\"ok\", \"${MISSING}\"]").unwrap();
        let mut errors = Vec::new();
        expand_tree(&mut v, &env, "", &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "a.b[1]");
    }
}
