//! `{name}` placeholders in mail templates, replaced in one pass (a value
//! is never scanned again, so it cannot inject another placeholder), HTML-
//! escaped in HTML bodies.

/// `template` with each `{name}` of `values` replaced; unknown `{…}` stay.
pub fn render(template: &str, values: &[(&str, &str)], html: bool) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (close, *v))
        });
        match value {
            Some((close, v)) => {
                if html {
                    out.push_str(&escape_html(v));
                } else {
                    out.push_str(v);
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_once() {
        let values = [("name", "{link}"), ("link", "https://a.example/?a=1&b=2")];
        assert_eq!(
            render("Hi {name}: {link} {unknown} {", &values, false),
            "Hi {link}: https://a.example/?a=1&b=2 {unknown} {"
        );
        assert_eq!(
            render("<a href=\"{link}\">{name}</a>", &values, true),
            "<a href=\"https://a.example/?a=1&amp;b=2\">{link}</a>"
        );
        assert_eq!(
            escape_html("<b>'x'</b>"),
            "&lt;b&gt;&#x27;x&#x27;&lt;/b&gt;"
        );
    }
}
