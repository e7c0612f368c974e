//! Writing HTML safely by construction: pages are `maud` templates, which escape every value
//! spliced into them (text and attributes alike) unless it is already [`Markup`]. Markup is made
//! only by templates, so a value from outside can reach a page only escaped. The small pieces
//! every page uses (tables, labelled fields, the CSRF field) are here.

pub use maud::{DOCTYPE, Markup, PreEscaped, Render, html};

/// A query-string component, percent-encoded.
pub fn url_part(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A table: a header row and rows of cells; numbers right-aligned by [`num`].
pub fn table(class: &str, head: &[&str], rows: &[Vec<Markup>]) -> Markup {
    html! {
        table class=(class) {
            thead { tr { @for h in head { th scope="col" { (h) } } } }
            tbody { @for row in rows { tr { @for cell in row { td { (cell) } } } } }
        }
    }
}

/// A cell of text.
pub fn text(value: impl Render) -> Markup {
    html! { (value) }
}

/// A right-aligned numeric cell.
pub fn num(value: impl Render) -> Markup {
    html! { span.num { (value) } }
}

/// Hidden CSRF field for a form.
pub fn csrf_field(token: &str) -> Markup {
    hidden("csrf", token)
}

/// A hidden form field.
pub fn hidden(name: &str, value: &str) -> Markup {
    html! { input type="hidden" name=(name) value=(value); }
}

/// A labelled input, described field by field (no attribute text is ever spliced in).
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    label: &'a str,
    name: &'a str,
    /// The form's id, when a page has two fields of one name (`{form}-{name}`; else `f-{name}`).
    form: Option<&'a str>,
    value: &'a str,
    required: bool,
    kind: Option<&'a str>,
    autocomplete: Option<&'a str>,
    inputmode: Option<&'a str>,
    pattern: Option<&'a str>,
    maxlength: Option<u32>,
    placeholder: Option<&'a str>,
    autofocus: bool,
}

impl<'a> Input<'a> {
    pub fn new(label: &'a str, name: &'a str) -> Self {
        Self { label, name, ..Self::default() }
    }

    pub fn value(self, value: &'a str) -> Self {
        Self { value, ..self }
    }

    pub fn in_form(self, form: &'a str) -> Self {
        Self { form: Some(form), ..self }
    }

    pub fn required(self) -> Self {
        Self { required: true, ..self }
    }

    /// The input's `type` (text when not given).
    pub fn kind(self, kind: &'a str) -> Self {
        Self { kind: Some(kind), ..self }
    }

    pub fn autocomplete(self, hint: &'a str) -> Self {
        Self { autocomplete: Some(hint), ..self }
    }

    /// No browser suggestions (`autocomplete="off"`).
    pub fn off(self) -> Self {
        self.autocomplete("off")
    }

    /// A whole number (`inputmode="numeric"`), matching `pattern` when given.
    pub fn numeric(self, pattern: Option<&'a str>) -> Self {
        Self { inputmode: Some("numeric"), pattern, ..self }
    }

    pub fn maxlength(self, n: u32) -> Self {
        Self { maxlength: Some(n), ..self }
    }

    pub fn placeholder(self, text: &'a str) -> Self {
        Self { placeholder: Some(text), ..self }
    }

    pub fn autofocus(self) -> Self {
        Self { autofocus: true, ..self }
    }
}

impl Render for Input<'_> {
    fn render(&self) -> Markup {
        let id = format!("{}-{}", self.form.unwrap_or("f"), self.name);
        html! {
            label {
                (self.label)
                input name=(self.name) id=(id) value=(self.value) type=[self.kind] required[self.required] autocomplete=[self.autocomplete]
                    inputmode=[self.inputmode] pattern=[self.pattern] maxlength=[self.maxlength] placeholder=[self.placeholder] autofocus[self.autofocus];
            }
        }
    }
}

/// A labelled select of `(value, label)` options.
pub fn select(label: &str, name: &str, options: &[(&str, &str)], selected: &str) -> Markup {
    select_in("f", label, name, options, selected)
}

/// A labelled select in the form `form` (its id is `{form}-{name}`).
pub fn select_in(form: &str, label: &str, name: &str, options: &[(&str, &str)], selected: &str) -> Markup {
    html! {
        label {
            (label)
            select name=(name) id={ (form) "-" (name) } {
                @for (value, text) in options { option value=(value) selected[*value == selected] { (text) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        let hostile = r#"<script>"x"&'y'</script>"#;
        assert_eq!(text(hostile).into_string(), "&lt;script&gt;&quot;x&quot;&amp;'y'&lt;/script&gt;");
        assert_eq!(hidden("n", hostile).into_string(), r#"<input type="hidden" name="n" value="&lt;script&gt;&quot;x&quot;&amp;'y'&lt;/script&gt;">"#);
        assert_eq!(url_part("a b&c"), "a+b%26c");
    }

    #[test]
    fn a_field_is_written_from_its_description() {
        let field = Input::new("Coins", "coins").value("5\"").required().numeric(Some("-?[0-9]+")).off();
        assert_eq!(
            field.render().into_string(),
            r#"<label>Coins<input name="coins" id="f-coins" value="5&quot;" required autocomplete="off" inputmode="numeric" pattern="-?[0-9]+"></label>"#
        );
    }
}
