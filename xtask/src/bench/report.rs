//! The benchmark's results: samples per setup and workload, their medians,
//! and the two files written from them, `results.md` (tables) and
//! `chart.svg` (grouped bars, hand-written SVG).
//!
//! It does no measuring. A cell is a median over the runs that produced a
//! number; a run that failed leaves a reason instead, and a cell with no
//! number and a reason means the setup did not work for that workload.
//!
//! | file | contents |
//! |---|---|
//! | `results.md` | how and where it ran, the median table with Rayback/v2ray, Rayback/rathole and Rayback ws+tls/v2ray ws+tls ratios, every run's numbers, notes |
//! | `chart.svg` | one group of bars per workload, each setup relative to the baseline (v2ray) on a log scale, oriented so that up is better |

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::setup::SetupKind;

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Iperf1,
    Iperf8,
    HttpKeepAlive,
    HttpNewConnection,
    Http1MiB,
    FirstByteMedian,
    FirstByteP99,
    RssIdle,
    RssPerConnection,
    CpuPerGiB,
    EchoIdleP50,
    EchoIdleP99,
    EchoBulkP50,
    EchoBulkP99,
    EchoBulkDone,
    BulkBesideEcho,
    BridgesPortalRss,
    BridgesPortalCpuIdle,
    BridgesPortalCpuRequests,
}

impl Metric {
    pub const ALL: [Metric; 19] = [
        Metric::Iperf1,
        Metric::Iperf8,
        Metric::HttpKeepAlive,
        Metric::HttpNewConnection,
        Metric::Http1MiB,
        Metric::FirstByteMedian,
        Metric::FirstByteP99,
        Metric::RssIdle,
        Metric::RssPerConnection,
        Metric::CpuPerGiB,
        Metric::EchoIdleP50,
        Metric::EchoIdleP99,
        Metric::EchoBulkP50,
        Metric::EchoBulkP99,
        Metric::EchoBulkDone,
        Metric::BulkBesideEcho,
        Metric::BridgesPortalRss,
        Metric::BridgesPortalCpuIdle,
        Metric::BridgesPortalCpuRequests,
    ];

    /// The table's first column.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Iperf1 => "iperf3 1 stream Gbit/s",
            Metric::Iperf8 => "iperf3 8 streams Gbit/s",
            Metric::HttpKeepAlive => "HTTP 1 KiB keep-alive req/s",
            Metric::HttpNewConnection => "HTTP 1 KiB new conn req/s",
            Metric::Http1MiB => "HTTP 1 MiB keep-alive req/s",
            Metric::FirstByteMedian => "first byte median ms",
            Metric::FirstByteP99 => "first byte p99 ms",
            Metric::RssIdle => "RSS idle both sides MiB",
            Metric::RssPerConnection => "RSS per held conn KiB",
            Metric::CpuPerGiB => "CPU s per GiB (1 stream)",
            Metric::EchoIdleP50 => "1 KiB echo p50 ms, tunnel idle",
            Metric::EchoIdleP99 => "1 KiB echo p99 ms, tunnel idle",
            Metric::EchoBulkP50 => "1 KiB echo p50 ms beside a bulk upload",
            Metric::EchoBulkP99 => "1 KiB echo p99 ms beside a bulk upload",
            Metric::EchoBulkDone => "exchanges done % beside a bulk upload",
            Metric::BulkBesideEcho => "bulk Gbit/s during the probe",
            Metric::BridgesPortalRss => "portal RSS MiB, 1,000 idle bridges",
            Metric::BridgesPortalCpuIdle => "portal CPU %, 1,000 idle bridges",
            Metric::BridgesPortalCpuRequests => "portal CPU %, 1,000 bridges, 1,000 req/s",
        }
    }

    /// Two short lines under the chart's group.
    fn chart_label(self) -> [&'static str; 2] {
        match self {
            Metric::Iperf1 => ["iperf3", "1 stream"],
            Metric::Iperf8 => ["iperf3", "8 streams"],
            Metric::HttpKeepAlive => ["1 KiB", "keep-alive"],
            Metric::HttpNewConnection => ["1 KiB", "new conn"],
            Metric::Http1MiB => ["1 MiB", "keep-alive"],
            Metric::FirstByteMedian => ["first byte", "median"],
            Metric::FirstByteP99 => ["first byte", "p99"],
            Metric::RssIdle => ["RSS", "idle"],
            Metric::RssPerConnection => ["RSS per", "held conn"],
            Metric::CpuPerGiB => ["CPU s", "per GiB"],
            Metric::EchoIdleP50 => ["echo p50", "idle"],
            Metric::EchoIdleP99 => ["echo p99", "idle"],
            Metric::EchoBulkP50 => ["echo p50", "beside bulk"],
            Metric::EchoBulkP99 => ["echo p99", "beside bulk"],
            Metric::EchoBulkDone => ["echoes done", "beside bulk"],
            Metric::BulkBesideEcho => ["bulk", "beside echo"],
            Metric::BridgesPortalRss => ["portal RSS", "1k bridges"],
            Metric::BridgesPortalCpuIdle => ["portal CPU", "1k bridges"],
            Metric::BridgesPortalCpuRequests => ["portal CPU", "1k req/s"],
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::Iperf1
                | Metric::Iperf8
                | Metric::HttpKeepAlive
                | Metric::HttpNewConnection
                | Metric::Http1MiB
                | Metric::EchoBulkDone
                | Metric::BulkBesideEcho
        )
    }

    /// Whether the metric is about the tunnel's own processes (so it has no
    /// value for the direct setup).
    pub fn needs_processes(self) -> bool {
        matches!(
            self,
            Metric::RssIdle
                | Metric::RssPerConnection
                | Metric::CpuPerGiB
                | Metric::BridgesPortalRss
                | Metric::BridgesPortalCpuIdle
                | Metric::BridgesPortalCpuRequests
        )
    }
}

/// A number the way the table shows it: three significant digits, `k` for
/// thousands (25.6, 4.61, 0.30, 353, 80.6k).
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if magnitude >= 1000.0 {
        format!("{:.1}k", value / 1000.0)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The median (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        length if length % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// Everything measured, by setup and metric.
#[derive(Default)]
pub struct Results {
    samples: BTreeMap<(SetupKind, Metric), Vec<f64>>,
    failures: BTreeMap<(SetupKind, Metric), Vec<String>>,
    notes: Vec<String>,
}

impl Results {
    pub fn record(&mut self, setup: SetupKind, metric: Metric, value: f64) {
        self.samples.entry((setup, metric)).or_default().push(value);
    }

    /// A run of `metric` on `setup` produced no number, because of `why`.
    pub fn fail(&mut self, setup: SetupKind, metric: Metric, why: &str) {
        self.failures
            .entry((setup, metric))
            .or_default()
            .push(why.to_owned());
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Samples plus failures so far: how many runs `metric` has had.
    pub fn attempts(&self, setup: SetupKind, metric: Metric) -> usize {
        let key = (setup, metric);
        self.samples.get(&key).map_or(0, Vec::len) + self.failures.get(&key).map_or(0, Vec::len)
    }

    pub fn median(&self, setup: SetupKind, metric: Metric) -> Option<f64> {
        self.samples
            .get(&(setup, metric))
            .and_then(|values| median(values))
    }

    /// `(setup, metric, first reason)` for every cell that has failures
    /// and no number at all: the setup does not work for that workload.
    pub fn broken_cells(&self) -> Vec<(SetupKind, Metric, String)> {
        self.failures
            .iter()
            .filter(|(key, _)| !self.samples.contains_key(key))
            .map(|((setup, metric), reasons)| (*setup, *metric, reasons[0].clone()))
            .collect()
    }

    fn cell(&self, setup: SetupKind, metric: Metric) -> String {
        if metric.needs_processes() && !setup.has_processes() {
            return "–".to_owned();
        }
        match self.median(setup, metric) {
            Some(value) => {
                let failed = self.failures.get(&(setup, metric)).map_or(0, Vec::len);
                if failed > 0 {
                    format!("{} ({failed} failed)", format_value(value))
                } else {
                    format_value(value)
                }
            }
            None if self.failures.contains_key(&(setup, metric)) => "**failed**".to_owned(),
            None => "–".to_owned(),
        }
    }

    /// `a/b` of the medians, or `–`.
    fn ratio(&self, metric: Metric, numerator: SetupKind, denominator: SetupKind) -> String {
        match (
            self.median(numerator, metric),
            self.median(denominator, metric),
        ) {
            (Some(top), Some(bottom)) if bottom != 0.0 => format!("{:.2}×", top / bottom),
            _ => "–".to_owned(),
        }
    }
}

/// How and where the benchmark ran, for the report's head.
pub struct RunInfo {
    pub command: String,
    pub date: String,
    pub machine: String,
    pub runs: usize,
    pub plan: String,
    pub versions: Vec<(String, String)>,
    pub setups: Vec<SetupKind>,
    pub skipped: Vec<String>,
    pub elapsed_seconds: f64,
}

/// The ratio columns of the median table, `(numerator, denominator,
/// header)`: each shown when both setups ran.
const RATIOS: [(SetupKind, SetupKind, &str); 3] = [
    (SetupKind::Rayback, SetupKind::V2Ray, "Rayback/v2ray"),
    (SetupKind::Rayback, SetupKind::Rathole, "Rayback/rathole"),
    (
        SetupKind::RaybackWsTls,
        SetupKind::V2RayWsTls,
        "Rayback ws+tls/v2ray ws+tls",
    ),
];

/// The median table (the part BENCHMARKS.md copies).
pub fn median_table(results: &Results, setups: &[SetupKind]) -> String {
    let mut table = String::new();
    let ratios: Vec<(SetupKind, SetupKind, &str)> = RATIOS
        .into_iter()
        .filter(|(top, bottom, _)| setups.contains(top) && setups.contains(bottom))
        .collect();
    let mut header = vec!["workload".to_owned(), "better".to_owned()];
    header.extend(setups.iter().map(|setup| setup.title().to_owned()));
    header.extend(ratios.iter().map(|(_, _, title)| (*title).to_owned()));
    let _ = writeln!(table, "| {} |", header.join(" | "));
    let _ = writeln!(table, "|{}", "---|".repeat(header.len()));
    for metric in Metric::ALL {
        let mut row = vec![
            metric.label().to_owned(),
            if metric.higher_is_better() {
                "higher"
            } else {
                "lower"
            }
            .to_owned(),
        ];
        row.extend(setups.iter().map(|setup| results.cell(*setup, metric)));
        row.extend(
            ratios
                .iter()
                .map(|(top, bottom, _)| results.ratio(metric, *top, *bottom)),
        );
        let _ = writeln!(table, "| {} |", row.join(" | "));
    }
    table
}

/// The whole `results.md`.
pub fn markdown(results: &Results, info: &RunInfo) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# Rayback end-to-end benchmark\n");
    let _ = writeln!(text, "- command: `{}`", info.command);
    let _ = writeln!(text, "- date: {}", info.date);
    let _ = writeln!(text, "- machine: {}", info.machine);
    let _ = writeln!(
        text,
        "- runs: {} (every setup once per round, setups alternating); cells are medians over the runs",
        info.runs
    );
    let _ = writeln!(text, "- workloads: {}", info.plan);
    let _ = writeln!(text, "- whole benchmark took {:.0} s", info.elapsed_seconds);
    let _ = writeln!(text, "\nVersions:\n");
    for (name, version) in &info.versions {
        let _ = writeln!(text, "- {name}: {version}");
    }
    let _ = writeln!(text, "\n## Medians\n");
    text.push_str(&median_table(results, &info.setups));
    let _ = writeln!(
        text,
        "\nRatios are Rayback's median divided by the other's (ws+tls: Rayback ws+tls's divided by v2ray ws+tls's): \
         above 1 is better where higher is better, below 1 is better where lower is better. \
         \"–\" means not applicable or not measured."
    );
    if info.runs > 1 {
        let _ = writeln!(text, "\n## Every run\n");
        let titles: Vec<&str> = info.setups.iter().map(|setup| setup.title()).collect();
        let _ = writeln!(text, "| workload | {} |", titles.join(" | "));
        let _ = writeln!(text, "|{}", "---|".repeat(titles.len() + 1));
        for metric in Metric::ALL {
            let cells: Vec<String> = info
                .setups
                .iter()
                .map(|setup| match results.samples.get(&(*setup, metric)) {
                    Some(values) => values
                        .iter()
                        .map(|value| format_value(*value))
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => "–".to_owned(),
                })
                .collect();
            let _ = writeln!(text, "| {} | {} |", metric.label(), cells.join(" | "));
        }
    }
    let _ = writeln!(text, "\n## Notes\n");
    let mut any = false;
    for skipped in &info.skipped {
        let _ = writeln!(text, "- skipped: {skipped}");
        any = true;
    }
    for ((setup, metric), reasons) in &results.failures {
        for reason in reasons {
            let _ = writeln!(
                text,
                "- {} / {}: failed: {}",
                setup.title(),
                metric.label(),
                one_line(reason)
            );
            any = true;
        }
    }
    for note in &results.notes {
        let _ = writeln!(text, "- {}", one_line(note));
        any = true;
    }
    if !any {
        let _ = writeln!(text, "- none");
    }
    text
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Colours of the setups' bars, in `SetupKind::ALL` order: ws+tls in a
/// darker red beside Rayback's and a lighter blue beside v2ray's.
const COLOURS: [&str; SetupKind::ALL.len()] = [
    "#9e9e9e", "#d62728", "#ff9896", "#1f77b4", "#8c1c13", "#aec7e8", "#2ca02c", "#98df8a",
];

fn colour(setup: SetupKind) -> &'static str {
    let index = SetupKind::ALL
        .iter()
        .position(|kind| *kind == setup)
        .unwrap_or(0);
    COLOURS[index]
}

/// The setup every bar is compared with: v2ray when it ran, else direct,
/// else the first setup.
fn baseline(setups: &[SetupKind]) -> Option<SetupKind> {
    [SetupKind::V2Ray, SetupKind::Direct]
        .into_iter()
        .find(|kind| setups.contains(kind))
        .or_else(|| setups.first().copied())
}

/// How many times better than the baseline, whatever the metric's
/// direction: above 1 always means better.
fn score(metric: Metric, value: f64, baseline: f64) -> Option<f64> {
    let score = if metric.higher_is_better() {
        value / baseline
    } else {
        baseline / value
    };
    (score.is_finite() && score > 0.0).then_some(score)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The grouped bar chart: log2 scale of the score, bars growing from the
/// baseline's line (1×) up when better and down when worse, each bar
/// labelled with its real value.
pub fn svg(results: &Results, setups: &[SetupKind], subtitle: &[&str]) -> String {
    const BAR: f64 = 15.0;
    const GAP: f64 = 26.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 105.0;
    const PLOT_HEIGHT: f64 = 330.0;
    let Some(base) = baseline(setups) else {
        return String::from(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>\n",
        );
    };
    // Every bar: (metric index, setup index, score, value).
    let mut bars = Vec::new();
    for (metric_index, metric) in Metric::ALL.into_iter().enumerate() {
        let Some(base_value) = results.median(base, metric) else {
            continue;
        };
        for (setup_index, setup) in setups.iter().enumerate() {
            if let Some(value) = results.median(*setup, metric) {
                if let Some(score) = score(metric, value, base_value) {
                    bars.push((metric_index, setup_index, score, value));
                }
            }
        }
    }
    let (mut low, mut high) = (-1.0f64, 1.0f64);
    for (_, _, score, _) in &bars {
        low = low.min(score.log2().floor());
        high = high.max(score.log2().ceil());
    }
    let (low, high) = (low.max(-5.0), high.min(6.0));
    let group_width = setups.len() as f64 * BAR + GAP;
    let width = LEFT + Metric::ALL.len() as f64 * group_width + 20.0;
    let height = TOP + PLOT_HEIGHT + 60.0;
    let y_of = |log: f64| TOP + (high - log.clamp(low, high)) / (high - low) * PLOT_HEIGHT;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Rayback end-to-end benchmark: \
         each setup relative to {} (log scale, up = better)</text>",
        escape(base.title())
    );
    for (index, line) in subtitle.iter().enumerate() {
        let y = 40.0 + 14.0 * index as f64;
        let _ = writeln!(
            svg,
            "<text x=\"{LEFT}\" y=\"{y:.0}\" fill=\"#555\">{}</text>",
            escape(line)
        );
    }
    let legend_y = 48.0 + 14.0 * subtitle.len() as f64;
    // Legend.
    let mut x = LEFT;
    for setup in setups {
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.0}\" y=\"{legend_y:.0}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\">{}</text>",
            colour(*setup),
            x + 16.0,
            legend_y + 10.0,
            escape(setup.title())
        );
        x += 36.0 + 6.5 * setup.title().len() as f64;
    }
    // Grid: one line per power of two.
    let mut step = low;
    while step <= high {
        let y = y_of(step);
        let label = if step >= 0.0 {
            format!("{}×", 2f64.powf(step))
        } else {
            format!("1/{}", 2f64.powf(-step))
        };
        let stroke = if step == 0.0 { "#000" } else { "#ddd" };
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.0}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{stroke}\"/>\
             <text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{label}</text>",
            width - 20.0,
            LEFT - 6.0,
            y + 4.0
        );
        step += 1.0;
    }
    // Groups.
    for (metric_index, metric) in Metric::ALL.into_iter().enumerate() {
        let group_left = LEFT + metric_index as f64 * group_width + GAP / 2.0;
        let centre = group_left + setups.len() as f64 * BAR / 2.0;
        let [first, second] = metric.chart_label();
        let direction = if metric.higher_is_better() {
            "higher"
        } else {
            "lower"
        };
        let _ = writeln!(
            svg,
            "<text x=\"{centre:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{first}</text>\
             <text x=\"{centre:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{second}</text>\
             <text x=\"{centre:.1}\" y=\"{:.0}\" text-anchor=\"middle\" fill=\"#777\" font-size=\"9\">({direction} is better)</text>",
            TOP + PLOT_HEIGHT + 18.0,
            TOP + PLOT_HEIGHT + 31.0,
            TOP + PLOT_HEIGHT + 43.0
        );
        for (_, setup_index, score, value) in bars.iter().filter(|bar| bar.0 == metric_index) {
            let setup = setups[*setup_index];
            let bar_left = group_left + *setup_index as f64 * BAR;
            let (zero, end) = (y_of(0.0), y_of(score.log2()));
            let (top, bottom) = (zero.min(end), zero.max(end).max(zero.min(end) + 1.5));
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{}: {} {} ({score:.2}× {})</title></rect>",
                bar_left + 1.0,
                BAR - 2.0,
                bottom - top,
                colour(setup),
                escape(setup.title()),
                format_value(*value),
                escape(metric.label()),
                escape(base.title()),
            );
            // The value, written upward along the bar's outer end.
            let (text_y, anchor) = if end <= zero {
                (end - 3.0, "start")
            } else {
                (end + 3.0, "end")
            };
            let text_x = bar_left + BAR / 2.0 + 3.5;
            let _ = writeln!(
                svg,
                "<text x=\"{text_x:.1}\" y=\"{text_y:.1}\" font-size=\"9\" text-anchor=\"{anchor}\" \
                 transform=\"rotate(-90 {text_x:.1} {text_y:.1})\">{}</text>",
                format_value(*value)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_like_the_reference_table() {
        let cases = [
            (25.6, "25.6"),
            (4.61, "4.61"),
            (80_600.0, "80.6k"),
            (5_512.0, "5.5k"),
            (154_049.0, "154k"),
            (353.2, "353"),
            (0.3, "0.30"),
            (-12.34, "-12.3"),
        ];
        for (value, shown) in cases {
            assert_eq!(format_value(value), shown);
        }
    }

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
        assert_eq!(percentile(&hundred, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    fn sample() -> Results {
        let mut results = Results::default();
        for (setup, value) in [
            (SetupKind::Direct, 25.6),
            (SetupKind::Rayback, 9.0),
            (SetupKind::V2Ray, 4.5),
        ] {
            results.record(setup, Metric::Iperf1, value);
        }
        results.record(SetupKind::Rayback, Metric::RssIdle, 5.0);
        results.record(SetupKind::V2Ray, Metric::RssIdle, 40.0);
        results.fail(
            SetupKind::Rayback,
            Metric::Iperf8,
            "iperf3 says: the server is busy",
        );
        results
    }

    #[test]
    fn table_has_medians_ratios_and_marks_failures() {
        let results = sample();
        let setups = [SetupKind::Direct, SetupKind::Rayback, SetupKind::V2Ray];
        let table = median_table(&results, &setups);
        assert!(table.starts_with(
            "| workload | better | direct | Rayback | v2ray 4.34 | Rayback/v2ray |\n"
        ));
        assert!(table.contains("| iperf3 1 stream Gbit/s | higher | 25.6 | 9.00 | 4.50 | 2.00× |"));
        assert!(table.contains("| iperf3 8 streams Gbit/s | higher | – | **failed** | – | – |"));
        assert!(table.contains("| RSS idle both sides MiB | lower | – | 5.00 | 40.0 | 0.12× |"));
        assert_eq!(table.lines().count(), 2 + Metric::ALL.len());
        let broken = results.broken_cells();
        assert_eq!(broken.len(), 1);
        assert_eq!(
            (broken[0].0, broken[0].1),
            (SetupKind::Rayback, Metric::Iperf8)
        );
    }

    #[test]
    fn ws_tls_pair_gets_its_own_ratio_column() {
        let mut results = sample();
        results.record(SetupKind::RaybackWsTls, Metric::Iperf1, 6.0);
        results.record(SetupKind::V2RayWsTls, Metric::Iperf1, 2.0);
        results.record(SetupKind::RaybackWsTls, Metric::CpuPerGiB, 1.0);
        results.record(SetupKind::V2RayWsTls, Metric::CpuPerGiB, 4.0);
        let setups = [
            SetupKind::Rayback,
            SetupKind::V2Ray,
            SetupKind::RaybackWsTls,
            SetupKind::V2RayWsTls,
        ];
        let table = median_table(&results, &setups);
        assert!(
            table.starts_with(
                "| workload | better | Rayback | v2ray 4.34 | Rayback ws+tls | v2ray 4.34 ws+tls \
                 | Rayback/v2ray | Rayback ws+tls/v2ray ws+tls |\n"
            ),
            "{table}"
        );
        assert!(table.contains(
            "| iperf3 1 stream Gbit/s | higher | 9.00 | 4.50 | 6.00 | 2.00 | 2.00× | 3.00× |"
        ));
        assert!(table
            .contains("| CPU s per GiB (1 stream) | lower | – | – | 1.00 | 4.00 | – | 0.25× |"));
        // Without v2ray ws+tls, no such column.
        let table = median_table(&results, &setups[..3]);
        assert!(!table.contains("ws+tls/"));
    }

    #[test]
    fn markdown_says_how_it_ran_and_lists_runs_and_failures() {
        let mut results = sample();
        results.record(SetupKind::V2Ray, Metric::Iperf1, 5.5);
        results.note("v2ray 4.34 / first byte: 1 of 20 requests failed".to_owned());
        let info = RunInfo {
            command: "cargo xtask bench --runs 2".to_owned(),
            date: "2025-01-01 00:00 UTC".to_owned(),
            machine: "2 cores, Test CPU".to_owned(),
            runs: 2,
            plan: "small".to_owned(),
            versions: vec![("v2ray".to_owned(), "V2Ray 4.34.0".to_owned())],
            setups: vec![SetupKind::Direct, SetupKind::Rayback, SetupKind::V2Ray],
            skipped: vec!["rathole (plain and noise): not on PATH".to_owned()],
            elapsed_seconds: 12.0,
        };
        let text = markdown(&results, &info);
        for expected in [
            "- command: `cargo xtask bench --runs 2`",
            "- machine: 2 cores, Test CPU",
            "- v2ray: V2Ray 4.34.0",
            // v2ray's two runs: 4.5 and 5.5, median 5.0; Rayback/v2ray 9/5.
            "| iperf3 1 stream Gbit/s | higher | 25.6 | 9.00 | 5.00 | 1.80× |",
            "| iperf3 1 stream Gbit/s | 25.6 | 9.00 | 4.50, 5.50 |",
            "- skipped: rathole (plain and noise): not on PATH",
            "- Rayback / iperf3 8 streams Gbit/s: failed: iperf3 says: the server is busy",
            "- v2ray 4.34 / first byte: 1 of 20 requests failed",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn chart_scores_point_up_when_better() {
        // Twice v2ray's rate and an eighth of its memory are both "better".
        assert_eq!(score(Metric::Iperf1, 9.0, 4.5), Some(2.0));
        assert_eq!(score(Metric::RssIdle, 5.0, 40.0), Some(8.0));
        assert_eq!(score(Metric::RssIdle, 0.0, 40.0), None);
        let svg = svg(
            &sample(),
            &[SetupKind::Direct, SetupKind::Rayback, SetupKind::V2Ray],
            &["test"],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Three iperf3 bars and two RSS bars, each with a tooltip.
        assert_eq!(svg.matches("<title>").count(), 5);
        assert!(svg.contains("relative to v2ray 4.34"));
    }
}
