//! A two-column `key  value` listing of effective settings, for `--check-config`.

use std::fmt::Display;

#[derive(Debug, Default)]
pub(crate) struct Summary {
    rows: Vec<(String, String)>,
}

impl Summary {
    pub(crate) fn row(&mut self, key: impl Into<String>, value: impl Display) -> &mut Self {
        self.rows.push((key.into(), value.to_string()));
        self
    }

    pub(crate) fn render(&self) -> String {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (key, value) in &self.rows {
            out.push_str(&format!("{key:<width$}  {value}\n"));
        }
        out
    }
}
