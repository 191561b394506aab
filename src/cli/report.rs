//! `artisan broadcast bench-report`: turns the benchmark matrix's results (one JSON
//! object per run, as `scripts/bench-report` collects them) into a Markdown table and a
//! PNG chart (deliveries/s in bursts and p99 latency when paced, against subscribers).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use plotters::prelude::*;
use serde::Deserialize;

use super::client::CliError;

/// Options of `artisan broadcast bench-report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The runs: one JSON object per line (scenario fields and the bench report).
    #[arg(long, default_value = "docs/bench/results.jsonl")]
    pub input: PathBuf,
    /// Where to write the Markdown table.
    #[arg(long, default_value = "docs/bench/results.md")]
    pub markdown: PathBuf,
    /// Where to write the chart.
    #[arg(long, default_value = "docs/bench/chart.png")]
    pub png: PathBuf,
    /// A TrueType font for the chart's text.
    #[arg(
        long,
        env = "BENCH_FONT",
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
}

/// One benchmark run of the matrix.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    /// `native` or `pusher`.
    pub protocol: String,
    /// `burst` or `paced`.
    pub mode: String,
    /// Server nodes (2: two nodes sharing a redis-server).
    pub nodes: u32,
    /// Messages per second when paced.
    #[serde(default)]
    pub rate: u64,
    /// Subscribed sockets.
    pub connections: usize,
    /// Server memory growth per idle subscribed connection.
    #[serde(default)]
    pub bytes_per_idle_connection: Option<f64>,
    /// Deliveries per second.
    pub deliveries_per_second: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Server CPU per delivery.
    #[serde(default)]
    pub server_cpu_us_per_delivery: Option<f64>,
}

type Key = (String, u32, String, usize, u64);

fn key(r: &Run) -> Key {
    (r.protocol.clone(), r.nodes, r.mode.clone(), r.connections, r.rate)
}

/// `a–b` of the values (one value alone when they round alike).
fn range(values: impl Iterator<Item = f64>, fmt: impl Fn(f64) -> String) -> String {
    let v: Vec<f64> = values.collect();
    if v.is_empty() {
        return "–".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (a, b) = (fmt(lo), fmt(hi));
    if a == b {
        a
    } else {
        format!("{a}–{b}")
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Reads the runs of `path`.
pub fn read_runs(path: &Path) -> Result<Vec<Run>, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| CliError::Other(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// The Markdown table of `runs`: one row per scenario, ranges over its runs.
pub fn markdown(runs: &[Run]) -> String {
    let mut groups: BTreeMap<Key, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        groups.entry(key(r)).or_default().push(r);
    }
    let mut out = String::from(
        "| protocol | nodes | load | runs | deliveries/s | server CPU per delivery | p50 | p99 | memory per idle connection |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for ((protocol, nodes, mode, connections, rate), rs) in &groups {
        let load = match mode.as_str() {
            "paced" => format!("{connections} × {rate}/s"),
            _ => format!("{connections}, burst"),
        };
        out.push_str(&format!(
            "| {protocol} | {nodes} | {load} | {} | {} | {} µs | {} ms | {} ms | {} KiB |\n",
            rs.len(),
            range(rs.iter().map(|r| r.deliveries_per_second), |v| format!("{v:.0}")),
            range(rs.iter().filter_map(|r| r.server_cpu_us_per_delivery), |v| format!(
                "{v:.1}"
            )),
            range(rs.iter().map(|r| r.p50_ms), |v| format!("{v:.1}")),
            range(rs.iter().map(|r| r.p99_ms), |v| format!("{v:.0}")),
            range(rs.iter().filter_map(|r| r.bytes_per_idle_connection), |v| format!(
                "{:.1}",
                v / 1024.0
            )),
        ));
    }
    out
}

/// One line of a chart panel: a label and (subscribers, value) points.
type Series = (String, Vec<(f64, f64)>);

fn series(runs: &[Run], mode: &str, value: impl Fn(&Run) -> f64) -> Vec<Series> {
    let mut lines: BTreeMap<(String, u32), BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.mode == mode) {
        lines
            .entry((r.protocol.clone(), r.nodes))
            .or_default()
            .entry(r.connections)
            .or_default()
            .push(value(r));
    }
    lines
        .into_iter()
        .map(|((protocol, nodes), points)| {
            let label = match nodes {
                1 => format!("{protocol}, one node"),
                n => format!("{protocol}, {n} nodes + Redis"),
            };
            let points = points
                .into_iter()
                .filter_map(|(c, v)| Some((c as f64, mean(v.into_iter())?)))
                .collect();
            (label, points)
        })
        .collect()
}

fn font(path: &Path) -> Result<(), CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::Other(format!(
            "cannot read the chart font {} ({e}); install fonts-dejavu-core or set BENCH_FONT",
            path.display()
        ))
    })?;
    // plotters keeps registered fonts for the process: leaking one font is intended.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| CliError::Other(format!("{} is not a TrueType font", path.display())))
}

fn draw(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    lines: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let xs: Vec<f64> = lines.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).collect();
    let ys: Vec<f64> = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).collect();
    let x_hi = xs.iter().copied().fold(0.0, f64::max).max(10_000.0) * 1.1;
    let y_hi = ys.iter().copied().fold(0.0, f64::max).max(1.0) * 1.3;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_hi, 0.0..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("subscribers")
        .y_desc(y_label)
        .x_labels(7)
        .y_labels(8)
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (label, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 5, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// Writes the chart of `runs` to `png`.
pub fn chart(runs: &[Run], png: &Path, font_path: &Path) -> Result<(), CliError> {
    font(font_path)?;
    let burst = series(runs, "burst", |r| r.deliveries_per_second);
    let paced = series(runs, "paced", |r| r.p99_ms);
    let fail = |e: Box<dyn std::error::Error>| CliError::Other(format!("cannot draw {}: {e}", png.display()));
    let root = BitMapBackend::new(png, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.into()))?;
    let (left, right) = root.split_horizontally(700);
    draw(
        &left,
        "Burst: deliveries per second (higher is better)",
        "deliveries/s",
        &burst,
    )
    .map_err(fail)?;
    draw(
        &right,
        "Paced (1,000 × 100/s; 10,000 × 10/s): p99 latency",
        "p99 latency, ms",
        &paced,
    )
    .map_err(fail)?;
    root.present().map_err(|e| fail(e.into()))?;
    Ok(())
}

/// A default path (`docs/bench/...`) from another directory: the crate's own, where the
/// benchmark writes them. A path given on the command line, or one that exists here, as is.
fn located(path: &Path) -> PathBuf {
    let here =
        path.is_absolute() || path.exists() || path.parent().is_some_and(|d| d.as_os_str().is_empty() || d.is_dir());
    if here {
        return path.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `artisan broadcast bench-report`.
pub fn run(args: &ReportArgs) -> Result<(), CliError> {
    let args = &ReportArgs {
        input: located(&args.input),
        markdown: located(&args.markdown),
        png: located(&args.png),
        font: args.font.clone(),
    };
    let runs = read_runs(&args.input)?;
    if runs.is_empty() {
        return Err(CliError::Other(format!("{} holds no runs", args.input.display())));
    }
    for path in [&args.markdown, &args.png] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
        }
    }
    std::fs::write(&args.markdown, markdown(&runs))
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", args.markdown.display())))?;
    chart(&runs, &args.png, &args.font)?;
    say!(
        "📈 {} runs → {} and {}",
        runs.len(),
        args.markdown.display(),
        args.png.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(protocol: &str, mode: &str, connections: usize, dps: f64, p99: f64, cpu: f64) -> Run {
        Run {
            protocol: protocol.into(),
            mode: mode.into(),
            nodes: 1,
            rate: if mode == "paced" { 10 } else { 0 },
            connections,
            bytes_per_idle_connection: Some(7372.8),
            deliveries_per_second: dps,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            server_cpu_us_per_delivery: Some(cpu),
        }
    }

    #[test]
    fn table_rows_are_ranges_over_runs_and_the_chart_is_a_png() {
        let runs = vec![
            run("native", "burst", 10_000, 70_000.0, 500.0, 8.6),
            run("native", "burst", 10_000, 73_000.0, 480.0, 9.1),
            run("native", "burst", 1000, 90_000.0, 40.0, 5.0),
            run("pusher", "paced", 10_000, 100_000.0, 450.0, 10.0),
            run("pusher", "paced", 1000, 1000.0, 20.0, 7.0),
        ];
        let table = markdown(&runs);
        assert!(
            table.contains(
                "| native | 1 | 10000, burst | 2 | 70000–73000 | 8.6–9.1 µs | 240.0–250.0 ms | 480–500 ms | 7.2 KiB |"
            ),
            "{table}"
        );
        assert!(table.contains("| pusher | 1 | 1000 × 10/s | 1 |"), "{table}");
        // scripts/test installs it (fonts-dejavu-core).
        let font = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        let png = std::env::temp_dir().join(format!("rustaxum-chart-{}.png", std::process::id()));
        chart(&runs, &png, font).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(
            bytes.len() > 10_000,
            "a drawn chart, not an empty image: {} bytes",
            bytes.len()
        );
        let _ = std::fs::remove_file(png);
    }
}
