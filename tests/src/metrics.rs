//! Reading samples out of the Prometheus text exposition format.

/// One scrape of `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The raw text, for failure messages.
    pub text: String,
}

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `custos_commands_total`.
    pub name: String,
    /// Label pairs in the order they appear.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Metrics {
    /// Wraps a scrape.
    pub fn new(text: String) -> Self {
        Metrics { text }
    }

    /// All samples, comments skipped.
    pub fn samples(&self) -> Vec<Sample> {
        self.text.lines().filter_map(parse_line).collect()
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<Sample> {
        self.samples()
            .into_iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .collect()
    }

    /// The sum of the matching samples, `None` when there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let m = self.matching(name, labels);
        (!m.is_empty()).then(|| m.iter().map(|s| s.value).sum())
    }

    /// Like [`Metrics::get`], treating an absent counter as zero (Prometheus
    /// counters with labels often appear only once they are non-zero).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close]),
                &line[close + 1..],
            )
        }
        None => {
            let (n, r) = line.split_once(char::is_whitespace)?;
            (n, Vec::new(), r)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        let Some((key, after)) = rest.split_once('=') else {
            return out;
        };
        let Some(after) = after.strip_prefix('"') else {
            return out;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
        rest = &after[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_sums() {
        let m = Metrics::new(
            "# HELP x y\n# TYPE custos_errors_total counter\n\
             custos_errors_total{target=\"cache\",kind=\"client_protocol\"} 2\n\
             custos_errors_total{target=\"cache\",kind=\"upstream_auth\"} 1\n\
             custos_command_duration_seconds_bucket{target=\"cache\",le=\"+Inf\"} 7\n\
             up 1\n"
                .to_string(),
        );
        assert_eq!(
            m.get("custos_errors_total", &[("target", "cache")]),
            Some(3.0)
        );
        assert_eq!(
            m.get("custos_errors_total", &[("kind", "upstream_auth")]),
            Some(1.0)
        );
        assert_eq!(
            m.get("custos_command_duration_seconds_bucket", &[("le", "+Inf")]),
            Some(7.0)
        );
        assert_eq!(m.get("up", &[]), Some(1.0));
        assert_eq!(m.get("missing", &[]), None);
    }
}
