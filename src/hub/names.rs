//! Event names every publishing path accepts.

/// Longest event name accepted, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// What is wrong with event name `name`, if anything: empty, longer than `max` bytes, or
/// holding a control character (a name reaches logs, the dashboard and `artisan`'s
/// terminal, where ESC or OSC sequences would act). Every publishing path checks it.
pub(crate) fn event_name_problem(name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        return Some("event name is empty".into());
    }
    if name.len() > max {
        return Some(format!("event name is longer than {max} bytes"));
    }
    name.chars()
        .find(|c| c.is_control())
        .map(|c| format!("event name contains the control character {c:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_control_characters() {
        assert_eq!(event_name_problem("order.shipped", 200), None);
        assert!(event_name_problem("", 200).is_some());
        assert!(event_name_problem(&"x".repeat(201), 200).is_some());
        assert!(event_name_problem("evil\u{1b}]0;x\u{7}", 200)
            .unwrap()
            .contains("control character"));
    }
}
