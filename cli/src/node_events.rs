//! Event lines: what `kirikae primary` and `kirikae backup` tell a process that
//! drives them (the demo) with `--events`, one JSON object per line after the
//! word `event`, among the human lines: `event {"event":"status",…}`.

/// The start of an event line.
const PREFIX: &str = "event ";

/// Prints `value` as an event line (flushed at once).
pub fn emit(value: serde_json::Value) {
    say!("{PREFIX}{value}");
}

/// The event of `line`, if it is an event line: its name (`"event"`) and object.
pub fn parse(line: &str) -> Option<(String, serde_json::Value)> {
    let value: serde_json::Value = serde_json::from_str(line.strip_prefix(PREFIX)?).ok()?;
    let name = value.get("event")?.as_str()?.to_owned();
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_parses_back_and_other_lines_do_not() {
        let line = format!(
            "{PREFIX}{}",
            serde_json::json!({"event": "status", "ops": 7})
        );
        let (name, value) = parse(&line).unwrap_or_else(|| panic!("{line} did not parse"));
        assert_eq!(name, "status");
        assert_eq!(value["ops"], 7);
        assert_eq!(parse("  1.5s ops 7 state Some(Duplex)"), None);
        assert_eq!(parse("event {\"ops\":7}"), None, "no name");
        assert_eq!(parse("event {not json"), None);
    }
}
