//! `boot.svg`: median guest seconds to `Running in initrd` against the content size, one
//! polyline per chain and storage profile with min–max bars; drawn by hand, no plotting crate.

use std::fmt::Write as _;

use super::markdown::accel_name;
use super::{BootSample, Chain, MB, RunInfo, Stats, chains, profiles, systemd_medians};

const SVG_WIDTH: f64 = 800.0;
const SVG_HEIGHT: f64 = 500.0;
/// The plot area; the legend sits right of it.
const PLOT_LEFT: f64 = 70.0;
const PLOT_RIGHT: f64 = 590.0;
const PLOT_TOP: f64 = 60.0;
const PLOT_BOTTOM: f64 = 430.0;
const LEGEND_LEFT: f64 = 610.0;
/// Horizontal spacing of the series at one size, so their min–max bars do not hide each other.
const DODGE_PX: f64 = 4.0;

fn chain_colour(chain: Chain) -> &'static str {
    match chain {
        Chain::ClassicGzip => "#d1492a",
        Chain::ClassicZstd => "#e39b1b",
        Chain::SquashErofs => "#7b3fa0",
        Chain::Initoverlayfs => "#1f6fb4",
        Chain::Floor => "#2e9d5b",
        Chain::InitoverlayfsSystemd => "#5aa9e6",
    }
}

/// The dash pattern of the i-th profile ("" = solid).
fn profile_dash(i: usize) -> &'static str {
    ["", "7 4", "2 3", "9 3 2 3"][i % 4]
}

/// Text for XML character data and attribute values.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// A tick step of 1, 2 or 5 × 10^k giving about `target` ticks up to `max`, and the axis end
/// (a multiple of the step at or above `max`).
fn ticks(max: f64, target: f64) -> (f64, f64) {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let raw = max / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = match raw / magnitude {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    } * magnitude;
    (step, (max / step - 1e-9).ceil().max(1.0) * step)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{value:.decimals$}")
}

/// One line of the plot: a chain on a profile.
struct Series {
    chain: Chain,
    profile_index: usize,
    label: String,
    /// (content MB, stats in seconds) per size, ascending.
    points: Vec<(f64, Stats)>,
}

/// `boot.svg`: median guest seconds to `Running in initrd` against content MB, one polyline
/// per chain × profile with min–max bars; colour by chain, dashes by profile.
pub fn svg(info: &RunInfo, samples: &[BootSample]) -> String {
    let series: Vec<Series> = profiles(samples)
        .into_iter()
        .enumerate()
        .flat_map(|(profile_index, profile)| {
            chains(samples).into_iter().map(move |chain| Series {
                chain,
                profile_index,
                label: format!("{}, {profile}", chain.name()),
                points: systemd_medians(samples, chain, profile)
                    .into_iter()
                    .map(|(x, st)| (x / MB, st))
                    .collect(),
            })
        })
        .collect();
    let max_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1.max))
        .fold(0.0, f64::max);
    let (x_step, x_end) = ticks(max_x, 6.0);
    let (y_step, y_end) = ticks(max_y, 6.0);
    let px = |x: f64| PLOT_LEFT + x / x_end * (PLOT_RIGHT - PLOT_LEFT);
    let py = |y: f64| PLOT_BOTTOM - y / y_end * (PLOT_BOTTOM - PLOT_TOP);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{SVG_WIDTH}" height="{SVG_HEIGHT}" fill="white"/>"#
    );
    let title = format!(
        "Guest time to systemd in the initrd, every chain, {}",
        accel_name(&info.accel)
    );
    // The machine's first three parts (board, CPUs, RAM): the whole description is boot.md's.
    let machine: Vec<&str> = info.machine.split(", ").take(3).collect();
    let subtitle = format!(
        "median of {} runs per point, bar = min–max · {} · kernel {}",
        info.runs,
        machine.join(", "),
        info.kernel
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        SVG_WIDTH / 2.0,
        xml_escape(&title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="43" text-anchor="middle" fill="#444">{}</text>"##,
        SVG_WIDTH / 2.0,
        xml_escape(&subtitle)
    );

    // Grid, ticks and axes.
    out.push_str(r##"<g stroke="#ddd" stroke-width="1">"##);
    out.push('\n');
    let y_ticks = (y_end / y_step).round() as usize;
    for i in 1..=y_ticks {
        let y = py(i as f64 * y_step);
        let _ = writeln!(
            out,
            r#"<line x1="{PLOT_LEFT:.1}" y1="{y:.1}" x2="{PLOT_RIGHT:.1}" y2="{y:.1}"/>"#
        );
    }
    out.push_str("</g>\n");
    out.push_str(r#"<g stroke="black" stroke-width="1">"#);
    out.push('\n');
    let _ = writeln!(
        out,
        r#"<line x1="{PLOT_LEFT:.1}" y1="{PLOT_BOTTOM:.1}" x2="{PLOT_RIGHT:.1}" y2="{PLOT_BOTTOM:.1}"/>"#
    );
    let _ = writeln!(
        out,
        r#"<line x1="{PLOT_LEFT:.1}" y1="{PLOT_TOP:.1}" x2="{PLOT_LEFT:.1}" y2="{PLOT_BOTTOM:.1}"/>"#
    );
    let x_ticks = (x_end / x_step).round() as usize;
    for i in 0..=x_ticks {
        let x = px(i as f64 * x_step);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{PLOT_BOTTOM:.1}" x2="{x:.1}" y2="{:.1}"/>"#,
            PLOT_BOTTOM + 5.0
        );
    }
    for i in 0..=y_ticks {
        let y = py(i as f64 * y_step);
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{PLOT_LEFT:.1}" y2="{y:.1}"/>"#,
            PLOT_LEFT - 5.0
        );
    }
    out.push_str("</g>\n");
    out.push_str(r#"<g text-anchor="middle">"#);
    out.push('\n');
    for i in 0..=x_ticks {
        let value = i as f64 * x_step;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            px(value),
            PLOT_BOTTOM + 19.0,
            tick_label(value, x_step)
        );
    }
    out.push_str("</g>\n");
    out.push_str(r#"<g text-anchor="end">"#);
    out.push('\n');
    for i in 0..=y_ticks {
        let value = i as f64 * y_step;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            PLOT_LEFT - 8.0,
            py(value) + 4.0,
            tick_label(value, y_step)
        );
    }
    out.push_str("</g>\n");
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">content size, MB unpacked (MB = 10^6 bytes)</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        PLOT_BOTTOM + 40.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">guest seconds to “Running in initrd”</text>"#,
        (PLOT_TOP + PLOT_BOTTOM) / 2.0
    );

    // The series.
    let n = series.len();
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let dodge = (i as f64 - (n as f64 - 1.0) / 2.0) * DODGE_PX;
        let colour = chain_colour(s.chain);
        let dash = profile_dash(s.profile_index);
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(out, "<g><title>{}</title>", xml_escape(&s.label));
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(x, st)| format!("{:.1},{:.1}", px(*x) + dodge, py(st.median)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>"#,
            points.join(" ")
        );
        for (x, st) in &s.points {
            let x = px(*x) + dodge;
            let (top, bottom) = (py(st.max), py(st.min));
            let _ = writeln!(
                out,
                r#"<path d="M{:.1} {top:.1}H{:.1}M{x:.1} {top:.1}V{bottom:.1}M{:.1} {bottom:.1}H{:.1}" stroke="{colour}" stroke-width="1" fill="none"/>"#,
                x - 3.0,
                x + 3.0,
                x - 3.0,
                x + 3.0
            );
            let _ = writeln!(
                out,
                r#"<circle cx="{x:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                py(st.median)
            );
        }
        out.push_str("</g>\n");
    }
    if series.iter().all(|s| s.points.is_empty()) {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#900">no passed boot reached systemd</text>"##,
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (PLOT_TOP + PLOT_BOTTOM) / 2.0
        );
    }

    // The legend.
    let mut y = PLOT_TOP + 10.0;
    for s in &series {
        let dash = profile_dash(s.profile_index);
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            out,
            r#"<line x1="{LEGEND_LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="2"{dash_attr}/>"#,
            LEGEND_LEFT + 34.0,
            chain_colour(s.chain)
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            LEGEND_LEFT + 42.0,
            y + 4.0,
            xml_escape(&s.label)
        );
        y += 20.0;
    }
    y += 10.0;
    for line in [
        "point: median",
        "bar: min–max over passed runs",
        "series shifted a few px",
        "apart at each size",
    ] {
        let _ = writeln!(
            out,
            r##"<text x="{LEGEND_LEFT:.1}" y="{y:.1}" font-size="11" fill="#444">{line}</text>"##
        );
        y += 15.0;
    }
    out.push_str("</svg>\n");
    out
}
