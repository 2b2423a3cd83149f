//! The demo's throughput-over-time plot (SVG): one line of operations per second,
//! with the story's windows shaded and its instants marked.

use std::path::Path;

use plotters::prelude::*;

use crate::CliError;

/// A window of the story, shaded: `[from_s, to_s]`.
pub struct Span {
    pub from_s: f64,
    pub to_s: f64,
    pub label: String,
    pub color: RGBColor,
}

/// An instant of the story, a vertical line.
pub struct Mark {
    pub at_s: f64,
    pub label: String,
    pub color: RGBColor,
}

/// Draws `points` (seconds, ops/s) with `spans` and `marks` into `path`.
pub fn throughput(
    path: &Path,
    points: &[(f64, f64)],
    spans: &[Span],
    marks: &[Mark],
    title: &str,
) -> Result<(), CliError> {
    let fail = |e: &dyn std::fmt::Display| CliError::Plot {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let t_max = points
        .iter()
        .map(|p| p.0)
        .chain(spans.iter().map(|s| s.to_s))
        .fold(1.0, f64::max);
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
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
        .x_desc("seconds since the story started")
        .y_desc("operations per second")
        .x_label_formatter(&|t| format!("{t:.0}"))
        .y_label_formatter(&|v| format!("{:.0}k", v / 1e3))
        .draw()
        .map_err(|e| fail(&e))?;
    for span in spans {
        let fill = span.color.mix(0.35).filled();
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(span.from_s, 0.0), (span.to_s, y_max)],
                fill,
            )))
            .map_err(|e| fail(&e))?
            .label(span.label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], fill));
    }
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("ops/s of the node serving writes")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE.stroke_width(2)));
    for mark in marks {
        let style = mark.color.stroke_width(2);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(mark.at_s, 0.0), (mark.at_s, y_max)],
                style,
            )))
            .map_err(|e| fail(&e))?
            .label(mark.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x + 7, y - 6), (x + 7, y + 6)], style));
    }
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
