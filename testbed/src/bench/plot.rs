//! The harness's plots: horizontal bar charts (a median bar, optionally a min–max whisker) drawn
//! as SVG with `plotters`, one file per chart, embedded in BENCHMARKS.md.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One bar: a label, the median, and optionally the spread (min, max) of the samples.
#[derive(Clone, Debug)]
pub struct Bar {
    /// What was measured.
    pub label: String,
    /// The median.
    pub value: f64,
    /// (min, max) of the samples, drawn as a whisker.
    pub spread: Option<(f64, f64)>,
}

/// A chart: a title, the unit of the x axis, and its bars from top to bottom.
#[derive(Clone, Debug)]
pub struct Chart {
    /// File stem under the plots directory (`<file>.svg`).
    pub file: String,
    /// Title drawn above the bars.
    pub title: String,
    /// Unit of the values.
    pub unit: String,
    /// Bars, top to bottom.
    pub bars: Vec<Bar>,
}

const WIDTH: u32 = 900;
const ROW: u32 = 34;
const LABEL_AREA: u32 = 330;

impl Chart {
    /// Draws the chart into `dir/<file>.svg`.
    pub fn draw(&self, dir: &Path) -> Result<()> {
        if self.bars.is_empty() {
            return Err(anyhow!("chart {} has no bars", self.file));
        }
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.svg", self.file));
        let height = 90 + ROW * self.bars.len() as u32;
        let root = SVGBackend::new(&path, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let top = self
            .bars
            .iter()
            .map(|b| b.spread.map_or(b.value, |s| s.1.max(b.value)))
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.18;
        let n = self.bars.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d(0.0..top, 0.0..n as f64)
            .map_err(plot_error)?;
        let labels: Vec<String> = self.bars.iter().map(|b| b.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n * 2 + 1)
            .y_label_formatter(&|y| row_label(&labels, *y))
            .x_desc(self.unit.as_str())
            .draw()
            .map_err(plot_error)?;
        for (i, b) in self.bars.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.2), (b.value, y + 0.8)],
                    RGBColor(70, 120, 180).filled(),
                )))
                .map_err(plot_error)?;
            if let Some((lo, hi)) = b.spread {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(lo, y + 0.5), (hi, y + 0.5)],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(plot_error)?;
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    format_value(b.value),
                    (
                        b.spread.map_or(b.value, |s| s.1.max(b.value)) + top * 0.01,
                        y + 0.65,
                    ),
                    ("sans-serif", 13),
                )))
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
        Ok(())
    }
}

/// The label of the row whose middle is at `y` (rows are drawn bottom-up), empty elsewhere.
fn row_label(labels: &[String], y: f64) -> String {
    let n = labels.len();
    let row = y - 0.5;
    if row < 0.0 || (row - row.round()).abs() > 1e-6 {
        return String::new();
    }
    let r = row.round() as usize;
    if r >= n {
        return String::new();
    }
    labels[n - 1 - r].clone()
}

/// A value as the bar's annotation: three significant figures at most.
pub fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_every_label() {
        let dir = tempfile::tempdir().unwrap();
        let c = Chart {
            file: "t".into(),
            title: "Throughput".into(),
            unit: "Gbit/s".into(),
            bars: vec![
                Bar {
                    label: "plain L2".into(),
                    value: 11.2,
                    spread: Some((10.0, 12.0)),
                },
                Bar {
                    label: "DVR across hosts".into(),
                    value: 10.4,
                    spread: None,
                },
            ],
        };
        c.draw(dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("t.svg")).unwrap();
        assert!(svg.starts_with("<svg"));
        for s in ["Throughput", "plain L2", "DVR across hosts", "11.2", "10.4"] {
            assert!(svg.contains(s), "{s} missing");
        }
        let empty = Chart { bars: vec![], ..c };
        assert!(empty.draw(dir.path()).is_err());
    }

    #[test]
    fn rows_are_labelled_top_down() {
        let l = vec!["a".to_string(), "b".to_string()];
        assert_eq!(row_label(&l, 1.5), "a");
        assert_eq!(row_label(&l, 0.5), "b");
        assert_eq!(row_label(&l, 1.0), "");
        assert_eq!(row_label(&l, 2.5), "");
    }
}
