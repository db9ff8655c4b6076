//! Draws the C10K comparison's CSV (`benches/c10k.sh`) as one SVG: for
//! connection-per-request (left) and keep-alive (right), requests per
//! second, server CPU per request and the share of clients that saw a
//! failed request (an error, or a wait over 1 s), against the number of
//! concurrent clients, one line per server.
//!
//!     cargo run --release --example c10k_plot -- benches/results/c10k.csv benches/results/c10k.svg
//!
//! The CSV has a header line and the columns `server, mode, concurrency,
//! requests, seconds, rps, cpu_us_per_request, errors, clients_failed,
//! error_detail`; `mode` is `close` or `keepalive`. Uses `plotters` (SVG backend only): a
//! well-kept plotting crate beats hand-writing axes, log scales and
//! legends.

use std::error::Error;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One measured point.
struct Point {
    server: String,
    mode: String,
    concurrency: u32,
    rps: f64,
    cpu_us: f64,
    failed_pct: f64,
}

/// The servers in the order of the legend, with their colours.
const SERVERS: [(&str, RGBColor); 5] = [
    ("threads", RGBColor(214, 39, 40)),
    ("fork", RGBColor(148, 103, 189)),
    ("prefork_blocking", RGBColor(255, 127, 14)),
    ("fibra", RGBColor(31, 119, 180)),
    ("fibra_prefork", RGBColor(44, 160, 44)),
];

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [csv, svg] = args.as_slice() else {
        return Err("usage: c10k_plot CSV SVG".into());
    };
    let points = read(csv)?;
    if points.is_empty() {
        return Err(format!("{csv}: no data rows").into());
    }
    let max_c = points
        .iter()
        .map(|p| p.concurrency)
        .max()
        .unwrap_or(1)
        .max(2);
    let root = SVGBackend::new(svg, (1200, 1350)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "HTTP server models against concurrency (server and load generator share 2 cores)",
        ("sans-serif", 22),
    )?;
    let panels = root.split_evenly((3, 2));
    for (column, (mode, title)) in [
        ("close", "connection per request"),
        ("keepalive", "keep-alive"),
    ]
    .into_iter()
    .enumerate()
    {
        let rows: Vec<&Point> = points.iter().filter(|p| p.mode == mode).collect();
        let max_rps = rows.iter().map(|p| p.rps).fold(1.0, f64::max) * 1.1;
        draw(
            &panels[column],
            (&format!("requests/s, {title}"), "requests/s", column == 0),
            &rows,
            (1u32..max_c).log_scale(),
            0f64..max_rps,
            |p| Some(p.rps),
        )?;
        let max_cpu = rows.iter().map(|p| p.cpu_us).fold(1.0, f64::max) * 1.1;
        draw(
            &panels[2 + column],
            (
                &format!("server CPU per request (µs), {title}"),
                "µs of CPU per request",
                false,
            ),
            &rows,
            (1u32..max_c).log_scale(),
            0f64..max_cpu,
            |p| (p.cpu_us > 0.0).then_some(p.cpu_us),
        )?;
        draw(
            &panels[4 + column],
            (
                &format!("clients that saw a failure (%), {title}"),
                "% of clients",
                false,
            ),
            &rows,
            (1u32..max_c).log_scale(),
            0f64..100.0,
            |p| Some(p.failed_pct),
        )?;
    }
    root.present()?;
    Ok(())
}

/// One panel: a line per server.
fn draw<X, Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    (caption, y_desc, legend): (&str, &str, bool),
    rows: &[&Point],
    x: X,
    y: Y,
    value: impl Fn(&Point) -> Option<f64>,
) -> Result<(), Box<dyn Error>>
where
    X: AsRangedCoord<Value = u32>,
    X::CoordDescType: ValueFormatter<u32>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (server, color) in SERVERS {
        let line: Vec<(u32, f64)> = rows
            .iter()
            .filter(|p| p.server == server)
            .filter_map(|p| Some((p.concurrency, value(p)?)))
            .collect();
        if line.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(server)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()?;
    }
    Ok(())
}

fn read(path: &str) -> Result<Vec<Point>, Box<dyn Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut points = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 9 {
            return Err(format!("{path}:{}: expected 10 columns: {line}", number + 1).into());
        }
        let parse = |i: usize| -> Result<f64, Box<dyn Error>> {
            f[i].trim()
                .parse::<f64>()
                .map_err(|e| format!("{path}:{}: column {}: {e}", number + 1, i + 1).into())
        };
        let concurrency = parse(2)?;
        points.push(Point {
            server: f[0].to_string(),
            mode: f[1].to_string(),
            concurrency: concurrency as u32,
            rps: parse(5)?,
            cpu_us: parse(6)?,
            failed_pct: 100.0 * parse(8)? / concurrency.max(1.0),
        });
    }
    Ok(points)
}
