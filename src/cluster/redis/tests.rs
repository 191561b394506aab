use super::*;

#[test]
fn glob_characters_in_the_prefix_are_escaped() {
    assert_eq!(escape_glob("app_"), "app_");
    assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
}

#[test]
fn laravel_payloads_parse() {
    let w: Wire<'_> =
        serde_json::from_str(r#"{"event":"App\\Events\\OrderShipped","data":{"id":1},"socket":null}"#).unwrap();
    assert_eq!(w.event, "App\\Events\\OrderShipped");
    assert_eq!(w.data.unwrap().get(), r#"{"id":1}"#);
    assert!(w.node.is_none());
}
