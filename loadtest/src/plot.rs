//! Latency-by-percentile plots as SVG, in the style of HdrHistogram's
//! plotter: the x axis counts "nines" (`log10(1/(1-p))`), so the median,
//! 90%, 99%, 99.9% ... are evenly spaced and the tail gets the room it
//! deserves. SVG only: no font or image libraries needed (text size is
//! estimated, and the viewer's fonts draw it).

use std::path::Path;

use plotters::prelude::*;

use crate::Error;
use crate::report::PercentilePoint;

/// Rightmost point of the x axis: 99.999%.
const NINES_MAX: f64 = 5.0;

/// Distinct, print-safe colours for up to eight series (cycled beyond).
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn nines(percentile: f64) -> Option<f64> {
    let tail = 1.0 - percentile / 100.0;
    (tail > 0.0)
        .then(|| -tail.log10())
        .filter(|x| *x <= NINES_MAX + 1e-9)
}

fn nines_label(x: f64) -> String {
    let n = x.round() as i32;
    if (x - f64::from(n)).abs() > 1e-6 {
        return String::new();
    }
    match n {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)).replace("99.%", "99%"),
    }
}

/// Writes `series` (name, curve) as an SVG plot with `title` to `path`.
pub fn write_svg(
    path: &Path,
    title: &str,
    series: &[(String, Vec<PercentilePoint>)],
) -> Result<(), Error> {
    draw(path, title, series).map_err(|e| Error::Output {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}

fn draw(
    path: &Path,
    title: &str,
    series: &[(String, Vec<PercentilePoint>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, points)| {
            let xy = points
                .iter()
                .filter_map(|p| nines(p.percentile).map(|x| (x, p.latency_us)))
                .collect();
            (name.as_str(), xy)
        })
        .collect();
    let y_max = curves
        .iter()
        .flat_map(|(_, xy)| xy.iter().map(|&(_, y)| y))
        .fold(0.0f64, f64::max);
    let y_top = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };

    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        // Room for the last x label, centred on the axis' end.
        .margin_right(48)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..NINES_MAX, 0f64..y_top)?;
    chart
        .configure_mesh()
        .x_labels(11)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("percentile")
        .y_desc("latency (us)")
        .draw()?;
    for (i, (name, xy)) in curves.into_iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(xy, colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_count_nines() {
        let labels: Vec<String> = (0..=5).map(|n| nines_label(f64::from(n))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        assert_eq!(nines_label(0.5), "");
        assert_eq!(nines(99.0).map(|x| (x * 1e6).round() / 1e6), Some(2.0));
        assert_eq!(nines(100.0), None);
    }

    #[test]
    fn writes_an_svg_with_every_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let curve = |scale: f64| {
            (0..=50)
                .map(|i| {
                    let n = f64::from(i) / 10.0;
                    PercentilePoint {
                        percentile: (1.0 - 10f64.powf(-n)) * 100.0,
                        latency_us: scale * (1.0 + n),
                    }
                })
                .collect::<Vec<_>>()
        };
        write_svg(
            &path,
            "test",
            &[
                ("direct".into(), curve(10.0)),
                ("custos".into(), curve(20.0)),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains("direct") && svg.contains("custos"));
        assert!(svg.contains("99.9%"));
        // A curve is one polyline with a point per percentile; grid lines
        // have two.
        let longest = svg
            .split("<polyline")
            .skip(1)
            .filter_map(|p| p.split("points=\"").nth(1))
            .map(|pts| {
                pts.split('"')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(longest >= 50, "longest polyline has {longest} points");
    }
}
