//! SVG plots of the series a scenario recorded (lag over time for `live`, throughput over time
//! for `catchup`): one file per metric, every side and run on the same axes. Drawn with
//! `plotters`' SVG backend.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::results::{ScenarioResult, Series, BLUESHIFT};

/// Writes one SVG per series metric of `s` into `out`; returns the file names.
pub(crate) fn write(s: &ScenarioResult, out: &Path) -> anyhow::Result<Vec<String>> {
    let mut metrics: Vec<&'static str> = s.series.iter().map(|x| x.metric).collect();
    metrics.dedup();
    metrics.sort_unstable();
    metrics.dedup();
    let mut files = Vec::new();
    for metric in metrics {
        let series: Vec<&Series> = s.series.iter().filter(|x| x.metric == metric).collect();
        let name = format!("{}-{}.svg", s.name, metric.replace('_', "-"));
        draw(&out.join(&name), s.name, metric, &series)
            .map_err(|e| anyhow!("could not draw {name}: {e}"))?;
        files.push(name);
    }
    Ok(files)
}

fn draw(path: &Path, scenario: &str, metric: &str, series: &[&Series]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Debug| format!("{e:?}");
    let xmax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let (xlabel, ylabel) = series
        .first()
        .map(|s| (s.x, s.y))
        .unwrap_or(("seconds", metric));
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{scenario}: {} (blueshift and peer, every run)",
                metric.replace('_', " ")
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .draw()
        .map_err(|e| err(&e))?;
    let peer_colors = [RED, GREEN, MAGENTA, CYAN];
    let mut peers: Vec<&str> = Vec::new();
    for s in series {
        let base = if s.side == BLUESHIFT {
            BLUE
        } else {
            let i = match peers.iter().position(|p| *p == s.side) {
                Some(i) => i,
                None => {
                    peers.push(&s.side);
                    peers.len() - 1
                }
            };
            peer_colors[i % peer_colors.len()]
        };
        // Later runs lighter.
        let color = base.mix(1.0 - 0.25 * f64::from(s.run.saturating_sub(1).min(3)));
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(format!("{} run {}", s.side, s.run))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
