//! The demo's throughput-over-time plot (SVG), with the restructure window marked.

use std::path::Path;

use kirikae_workload::scenario::Sample;
use plotters::prelude::*;

use crate::CliError;

/// Draws ops/s over time, shading `[began, switched]` (seconds) and marking phases.
pub fn throughput(
    path: &Path,
    samples: &[Sample],
    window_s: (f64, f64),
    title: &str,
) -> Result<(), CliError> {
    let fail = |e: &dyn std::fmt::Display| CliError::Plot {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let y_max = samples.iter().map(|s| s.ops_per_s).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (1000, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the workload started")
        .y_desc("operations per second")
        .x_label_formatter(&|t| format!("{t:.0}"))
        .y_label_formatter(&|v| format!("{:.1}M", v / 1e6))
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(window_s.0, 0.0), (window_s.1, y_max)],
            RGBColor(255, 224, 178).filled(),
        )))
        .map_err(|e| fail(&e))?
        .label("online restructure (copy, sync, switch)")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 15, y + 5)],
                RGBColor(255, 224, 178).filled(),
            )
        });
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, s.ops_per_s)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("ops/s (100 ms samples)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(window_s.1, 0.0), (window_s.1, y_max)],
            RED.stroke_width(2),
        )))
        .map_err(|e| fail(&e))?
        .label("switch")
        .legend(|(x, y)| {
            PathElement::new(vec![(x + 7, y - 6), (x + 7, y + 6)], RED.stroke_width(2))
        });
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
