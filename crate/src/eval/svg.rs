//! Hand-written SVG charts for the report: bar charts with error bars, and line charts of
//! a sweep with error bars and reference lines. Plain strings, no plotting crate: the
//! charts are simple and the output must be stable and reviewable in a diff.

use std::fmt::Write;

use super::metrics::Estimate;

const PANEL_W: f64 = 380.0;
const PANEL_H: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 72.0;
const BOTTOM: f64 = 64.0;
const FONT: &str = "font-family=\"Helvetica, Arial, sans-serif\"";

/// Text for XML content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A round step (1, 2 or 5 × 10^k) giving about `target` intervals over `range`.
fn nice_step(range: f64, target: f64) -> f64 {
    if range.is_nan() || range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / target;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Axis limits and ticks covering [lo, hi] on round numbers.
fn axis(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = (lo, hi);
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 { lo.abs() * 0.1 } else { 1.0 };
        lo -= pad;
        hi += pad;
    }
    let step = nice_step(hi - lo, 5.0);
    let a = (lo / step).floor() * step;
    let b = (hi / step).ceil() * step;
    let n = ((b - a) / step).round() as usize;
    let ticks = (0..=n).map(|i| a + i as f64 * step).collect();
    (a, b, ticks)
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        let s = format!("{v:.1}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One bar: a mean with its interval.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub estimate: Estimate,
    pub color: String,
}

/// One panel of bars sharing a y axis.
#[derive(Debug, Clone)]
pub struct BarPanel {
    pub title: String,
    /// e.g. "higher is better"; shown under the title.
    pub note: String,
    pub bars: Vec<Bar>,
}

/// A point series of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: String,
    /// One value per x position; None leaves a gap.
    pub points: Vec<Option<Estimate>>,
}

/// A horizontal reference line (a baseline's mean).
#[derive(Debug, Clone)]
pub struct RefLine {
    pub label: String,
    pub value: f64,
    pub color: String,
}

#[derive(Debug, Clone)]
pub struct LinePanel {
    pub title: String,
    pub note: String,
    pub series: Vec<Series>,
    pub refs: Vec<RefLine>,
}

struct Frame {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    lo: f64,
    hi: f64,
}

impl Frame {
    fn y(&self, v: f64) -> f64 {
        self.y0 + self.h - (v - self.lo) / (self.hi - self.lo) * self.h
    }
}

fn header(out: &mut String, width: f64, height: f64, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" {FONT} font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
}

/// Frame, grid, y ticks and panel title; returns the frame for plotting.
fn panel_frame(out: &mut String, index: usize, title: &str, note: &str, lo: f64, hi: f64, from_zero: bool) -> Frame {
    let (lo, hi) = if from_zero { (lo.min(0.0), hi.max(0.0)) } else { (lo, hi) };
    let (a, b, ticks) = axis(lo, hi);
    let f = Frame {
        x0: index as f64 * PANEL_W + LEFT,
        y0: TOP,
        w: PANEL_W - LEFT - RIGHT,
        h: PANEL_H - TOP - BOTTOM,
        lo: a,
        hi: b,
    };
    let cx = f.x0 + f.w / 2.0;
    let _ = writeln!(
        out,
        "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\">{}</text>",
        TOP - 26.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\">{}</text>",
        TOP - 10.0,
        escape(note)
    );
    for t in ticks {
        let y = f.y(t);
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            f.x0,
            f.x0 + f.w,
            f.x0 - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#999\"/>",
        f.x0, f.y0, f.w, f.h
    );
    f
}

fn error_bar(out: &mut String, x: f64, f: &Frame, e: &Estimate) {
    let (ylo, yhi) = (f.y(e.lo), f.y(e.hi));
    let _ = writeln!(
        out,
        "<path d=\"M{x:.1} {ylo:.1}V{yhi:.1}M{:.1} {ylo:.1}H{:.1}M{:.1} {yhi:.1}H{:.1}\" stroke=\"#222\" stroke-width=\"1.3\" fill=\"none\"/>",
        x - 5.0,
        x + 5.0,
        x - 5.0,
        x + 5.0
    );
}

/// Panels of bars (mean, with the interval as an error bar) side by side.
pub fn bar_chart(title: &str, panels: &[BarPanel]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = PANEL_H - 16.0;
    let mut out = String::new();
    header(&mut out, width, height, title);
    for (pi, p) in panels.iter().enumerate() {
        let lo = p.bars.iter().map(|b| b.estimate.lo).fold(f64::INFINITY, f64::min);
        let hi = p.bars.iter().map(|b| b.estimate.hi).fold(f64::NEG_INFINITY, f64::max);
        let f = panel_frame(&mut out, pi, &p.title, &p.note, lo, hi, true);
        let band = f.w / p.bars.len().max(1) as f64;
        let zero = f.y(0.0);
        for (i, b) in p.bars.iter().enumerate() {
            let cx = f.x0 + band * (i as f64 + 0.5);
            let bw = band * 0.6;
            let ym = f.y(b.estimate.mean);
            let (top, h) = if ym < zero { (ym, zero - ym) } else { (zero, ym - zero) };
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{bw:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {} [{}, {}]</title></rect>",
                cx - bw / 2.0,
                escape(&b.color),
                escape(&b.label),
                fmt_tick(b.estimate.mean),
                fmt_tick(b.estimate.lo),
                fmt_tick(b.estimate.hi)
            );
            error_bar(&mut out, cx, &f, &b.estimate);
            let _ = writeln!(
                out,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\" font-size=\"11\">{}</text>",
                f.y0 + f.h + 16.0,
                escape(&b.label),
                f.y0 + f.h + 31.0,
                fmt_tick(b.estimate.mean)
            );
        }
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{zero:.1}\" x2=\"{:.1}\" y2=\"{zero:.1}\" stroke=\"#555\"/>",
            f.x0,
            f.x0 + f.w
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Panels of series over shared categorical x positions; each x label may have two lines
/// (e.g. "T=10" over "k=2.90").
pub fn line_chart(title: &str, x_labels: &[(String, String)], x_title: &str, panels: &[LinePanel]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = PANEL_H + 24.0;
    let mut out = String::new();
    header(&mut out, width, height, title);
    for (pi, p) in panels.iter().enumerate() {
        let values = p
            .series
            .iter()
            .flat_map(|s| s.points.iter().flatten().flat_map(|e| [e.lo, e.hi]))
            .chain(p.refs.iter().map(|r| r.value));
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let f = panel_frame(&mut out, pi, &p.title, &p.note, lo, hi, false);
        let n = x_labels.len().max(1);
        let x = |i: usize| f.x0 + f.w * (i as f64 + 0.5) / n as f64;
        for (i, (l1, l2)) in x_labels.iter().enumerate() {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\" font-size=\"11\">{}</text>",
                x(i),
                f.y0 + f.h + 16.0,
                escape(l1),
                x(i),
                f.y0 + f.h + 30.0,
                escape(l2)
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            f.x0 + f.w / 2.0,
            f.y0 + f.h + 48.0,
            escape(x_title)
        );
        for r in &p.refs {
            let y = f.y(r.value);
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-dasharray=\"5 4\" stroke-width=\"1.5\"><title>{}: {}</title></line>",
                f.x0,
                f.x0 + f.w,
                escape(&r.color),
                escape(&r.label),
                fmt_tick(r.value)
            );
        }
        for s in &p.series {
            let mut d = String::new();
            let mut pen_down = false;
            for (i, e) in s.points.iter().enumerate() {
                match e {
                    Some(e) => {
                        let _ = write!(d, "{}{:.1} {:.1}", if pen_down { "L" } else { "M" }, x(i), f.y(e.mean));
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            let _ = writeln!(out, "<path d=\"{d}\" stroke=\"{}\" stroke-width=\"2\" fill=\"none\"/>", escape(&s.color));
            for (i, e) in s.points.iter().enumerate() {
                if let Some(e) = e {
                    error_bar(&mut out, x(i), &f, e);
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"><title>{}: {} [{}, {}]</title></circle>",
                        x(i),
                        f.y(e.mean),
                        escape(&s.color),
                        escape(&s.label),
                        fmt_tick(e.mean),
                        fmt_tick(e.lo),
                        fmt_tick(e.hi)
                    );
                }
            }
        }
    }
    legend(&mut out, width, height - 14.0, panels.first());
    out.push_str("</svg>\n");
    out
}

/// One row under the panels naming the series (solid, dots) and reference lines (dashed):
/// labels inside the plot would collide when baselines lie close together.
fn legend(out: &mut String, width: f64, y: f64, panel: Option<&LinePanel>) {
    let Some(p) = panel else { return };
    let mut items: Vec<(&str, &str, bool)> =
        p.series.iter().map(|s| (s.label.as_str(), s.color.as_str(), false)).collect();
    items.extend(p.refs.iter().map(|r| (r.label.as_str(), r.color.as_str(), true)));
    // About 7 px a character at font size 12, plus the 28 px sample and a gap.
    let widths: Vec<f64> = items.iter().map(|(l, _, _)| 28.0 + 7.0 * l.chars().count() as f64 + 18.0).collect();
    let mut x = (width - widths.iter().sum::<f64>()) / 2.0;
    for ((label, color, dashed), w) in items.iter().zip(&widths) {
        let dash = if *dashed { " stroke-dasharray=\"5 4\"" } else { "" };
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
            y - 4.0,
            x + 22.0,
            y - 4.0,
            escape(color)
        );
        if !dashed {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"/>",
                x + 11.0,
                y - 4.0,
                escape(color)
            );
        }
        let _ = writeln!(out, "<text x=\"{:.1}\" y=\"{y:.1}\">{}</text>", x + 28.0, escape(label));
        x += w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(m: f64) -> Estimate {
        Estimate { mean: m, lo: m - 1.0, hi: m + 1.0, n: 3 }
    }

    #[test]
    fn axes_cover_the_data_on_round_ticks() {
        let (a, b, t) = axis(0.0, 87.0);
        assert_eq!((a, b), (0.0, 100.0));
        assert_eq!(t, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let (a, b, _) = axis(-0.31, 0.74);
        assert!(a <= -0.31 && b >= 0.74);
        let (a, b, _) = axis(5.0, 5.0);
        assert!(a < 5.0 && b > 5.0);
        let (a, b, _) = axis(f64::NAN, f64::INFINITY);
        assert_eq!((a, b), (0.0, 1.0));
    }

    #[test]
    fn charts_are_well_formed_and_escape_labels() {
        let svg = bar_chart(
            "concise <words>",
            &[BarPanel {
                title: "words".into(),
                note: "lower is better".into(),
                bars: vec![
                    Bar { label: "base".into(), estimate: est(80.0), color: "#999".into() },
                    Bar { label: "a&b".into(), estimate: est(-3.0), color: "#e45756".into() },
                ],
            }],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("concise &lt;words&gt;") && svg.contains("a&amp;b"));
        assert_eq!(svg.matches("<rect").count(), 4); // background, 2 bars, frame
        let labels = vec![("T=1".to_string(), "k=0.95".to_string()), ("T=60".to_string(), "k=4.65".to_string())];
        let svg = line_chart(
            "sweep",
            &labels,
            "Amulet iterations",
            &[LinePanel {
                title: "words".into(),
                note: String::new(),
                series: vec![Series {
                    label: "amulet".into(),
                    color: "red".into(),
                    points: vec![Some(est(3.0)), None],
                }],
                refs: vec![RefLine { label: "pref".into(), value: 2.0, color: "blue".into() }],
            }],
        );
        assert!(svg.contains("k=4.65") && svg.contains("stroke-dasharray"));
        assert_eq!(svg.matches("<circle").count(), 2); // the point and its legend sample
        assert!(svg.contains(">pref</text>"));
    }
}
