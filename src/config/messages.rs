//! serde's and toml's messages in the file's own terms: what a value of the key should
//! look like, and for an unknown key the nearest known one ("did you mean `listen`?").

/// `message` (serde's, about `key`) as an operator reads it.
pub(super) fn in_file_terms(message: &str, key: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return unknown_key(rest);
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return wrong_type(got, expected, key);
        }
    }
    message.to_string()
}

/// For serde's "unknown field" message, the known key nearest the unknown one, if
/// one is near enough to be what was meant.
pub(super) fn meant(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, known) = rest.split_once('`')?;
    nearest(
        unknown,
        &known.split('`').skip(1).step_by(2).collect::<Vec<_>>(),
    )
}

fn nearest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

/// "unknown field `listn`, expected one of `listen`, `metrics`": the nearest known key.
fn unknown_key(rest: &str) -> String {
    let (unknown, known) = rest.split_once('`').map_or((rest, ""), |(u, k)| (u, k));
    let known: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
    match nearest(unknown, &known) {
        Some(k) => format!("unknown key `{unknown}`: did you mean `{k}`?"),
        None if known.is_empty() => format!("unknown key `{unknown}`"),
        None => format!(
            "unknown key `{unknown}`; the keys here: {}",
            known.join(", ")
        ),
    }
}

/// "string \"900\"" where "a nonzero u32" was expected, and the like.
fn wrong_type(got: &str, expected: &str, key: &str) -> String {
    let leaf = key.rsplit(['.', ']']).next().unwrap_or(key);
    let number = ["u8", "u16", "u32", "u64", "usize", "i64", "integer"]
        .iter()
        .any(|t| expected.ends_with(t));
    if number {
        return match got.strip_prefix("string ") {
            Some(quoted) => format!(
                "expected a number, got the string {quoted}: write it without quotes ({leaf} = {})",
                quoted.trim_matches('"')
            ),
            None => format!("expected a number, got {got}"),
        };
    }
    match expected {
        "a sequence" if leaf == "route" => {
            "routes are [[route]] tables (an array of tables): write [[route]], not [route]"
                .to_string()
        }
        "a sequence" => format!("expected a list such as [{}], got {got}", list_example(got)),
        "a boolean" => format!("expected true or false (no quotes), got {got}"),
        "a string" => format!("expected a string in quotes, got {got}"),
        _ => format!("expected {expected}, got {got}"),
    }
}

/// A list holding the value that was given alone.
fn list_example(got: &str) -> String {
    got.strip_prefix("string ").unwrap_or("\"...\"").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_in_the_files_terms() {
        // (serde's message, key, what the operator reads)
        let cases = [
            ("unknown field `listn`, expected one of `listen`, `metrics`", "server.listn", "unknown key `listn`: did you mean `listen`?"),
            ("unknown field `zzz`, expected one of `listen`, `metrics`", "server.zzz", "unknown key `zzz`; the keys here: listen, metrics"),
            ("invalid type: string \"900\", expected a nonzero u32", "route[0].max_qps", "expected a number, got the string \"900\": write it without quotes (max_qps = 900)"),
            ("invalid type: map, expected a sequence", "route", "routes are [[route]] tables (an array of tables): write [[route]], not [route]"),
            ("invalid type: string \"0.0.0.0:53\", expected a sequence", "server.listen", "expected a list such as [\"0.0.0.0:53\"], got string \"0.0.0.0:53\""),
            ("invalid type: string \"on\", expected a boolean", "server.loop_detection", "expected true or false (no quotes), got string \"on\""),
            ("invalid type: integer `5`, expected a duration string such as \"5s\"", "route[0].timeout", "expected a duration string such as \"5s\", got integer `5`"),
        ];
        for (serde, key, want) in cases {
            assert_eq!(in_file_terms(serde, key), want, "{serde}");
        }
    }
}
