//! Writing HTML safely by hand: every value from outside goes through [`esc`]; pages are built
//! from small functions that return strings.

use std::fmt::Write;

/// Escapes text for element content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string component, percent-encoded.
pub fn url_part(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A table: a header row and rows of already-escaped cells; numbers right-aligned by class.
pub fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table class=\"{class}\"><thead><tr>");
    for h in head {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A right-aligned numeric cell.
pub fn num(text: &str) -> String {
    format!("<span class=\"num\">{}</span>", esc(text))
}

/// Hidden CSRF field for a form.
pub fn csrf_field(token: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(token))
}

/// A labelled text input.
pub fn input(label: &str, name: &str, value: &str, attrs: &str) -> String {
    format!("<label>{}<input name=\"{}\" id=\"f-{}\" value=\"{}\" {attrs}></label>", esc(label), esc(name), esc(name), esc(value))
}

/// A labelled select of `(value, label)` options.
pub fn select(label: &str, name: &str, options: &[(&str, &str)], selected: &str) -> String {
    let mut out = format!("<label>{}<select name=\"{}\" id=\"f-{}\">", esc(label), esc(name), esc(name));
    for (value, text) in options {
        let sel = if *value == selected { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{}\"{sel}>{}</option>", esc(value), esc(text));
    }
    out.push_str("</select></label>");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(super::esc(r#"<script>"x"&'y'</script>"#), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;");
        assert_eq!(super::url_part("a b&c"), "a+b%26c");
    }
}
