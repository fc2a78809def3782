//! The demo's full-screen view (ratatui on crossterm): decisions and their rate, halts by
//! kind and the latest halts with their cause chains, pools draining, approvals waiting.
//! Redrawn four times a second; `q`, Esc or Ctrl-C ends the run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Text};
use ratatui::widgets::{Block, Gauge, List, ListItem, Paragraph, Sparkline};
use ratatui::Frame;

use super::demo::{pool_percent, Board, Demo};

/// How often the view is redrawn.
const FRAME: Duration = Duration::from_millis(250);

/// Shows the run until it ends or the user quits; the terminal is restored either way.
pub fn show(demo: &Demo) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> anyhow::Result<()> {
        while !demo.live.stop.load(Ordering::Relaxed) {
            terminal.draw(|f| draw(f, demo))?;
            if event::poll(FRAME)? && quit(event::read()?) {
                demo.live.stop.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    })();
    ratatui::try_restore()?;
    result
}

/// `q`, Esc or Ctrl-C.
fn quit(e: Event) -> bool {
    let Event::Key(k) = e else { return false };
    k.kind == KeyEventKind::Press
        && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
            || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL)))
}

fn draw(f: &mut Frame, demo: &Demo) {
    let Ok(board) = demo.board.lock() else { return };
    let pools = board.pools.len().max(4) as u16 + 2;
    let [head, top, mid, bottom] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Length(pools),
        Constraint::Min(5),
    ])
    .areas(f.area());
    header(f, head, demo);
    let [decisions, halts] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(top);
    decisions_panel(f, decisions, demo, &board);
    halts_panel(f, halts, &board);
    let [pools, approvals] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(mid);
    pools_panel(f, pools, &board);
    approvals_panel(f, approvals, demo, &board);
    recent_panel(f, bottom, &board);
}

fn header(f: &mut Frame, area: Rect, demo: &Demo) {
    let elapsed = demo.started.elapsed().as_secs();
    let text = Text::from(vec![
        Line::from(vec![
            "warden demo".bold(),
            format!(
                "  node {}  ·  {} agents ({} registered, {} acting)  ·  seed {}  ·  {:02}:{:02}",
                demo.base,
                demo.agents,
                demo.live.registered.load(Ordering::Relaxed),
                demo.live.active.load(Ordering::Relaxed),
                demo.seed,
                elapsed / 60,
                elapsed % 60
            )
            .into(),
        ]),
        Line::from(format!("web page: {}", demo.web)),
        Line::from(format!(
            "operator token: {}  ·  journal: {}/journal  ·  q or Ctrl-C stops",
            demo.token_file,
            demo.data.display()
        ))
        .dim(),
    ]);
    f.render_widget(Paragraph::new(text).block(Block::new()), area);
}

fn decisions_panel(f: &mut Frame, area: Rect, demo: &Demo, board: &Board) {
    let live = &demo.live;
    let d = |i: usize| live.decisions[i].load(Ordering::Relaxed);
    let rate = board.rate.back().copied().unwrap_or(0);
    let block = Block::bordered().title(format!(" Decisions: {} ({rate}/s) ", live.decided()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [counts, chart] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    let line = Line::from(vec![
        format!("allow {}  ", d(0)).green(),
        format!("deny {}  ", d(1)).yellow(),
        format!("approval {}  ", d(2)).cyan(),
        format!("halt {}  ", d(3)).red(),
        format!(
            "outcomes {}  errors {}",
            live.outcomes.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed)
        )
        .into(),
    ]);
    f.render_widget(Paragraph::new(line), counts);
    let width = chart.width as usize;
    let data: Vec<u64> = board.rate.iter().rev().take(width).rev().copied().collect();
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::default().fg(Color::Green)),
        chart,
    );
}

fn halts_panel(f: &mut Frame, area: Rect, board: &Board) {
    let total: u64 = board.halts.values().sum();
    let items: Vec<ListItem> = board
        .halts
        .iter()
        .map(|(kind, n)| ListItem::new(format!("{kind:<14} {n:>6}")))
        .collect();
    f.render_widget(
        List::new(items).block(Block::bordered().title(format!(" Halts by kind: {total} "))),
        area,
    );
}

fn pools_panel(f: &mut Frame, area: Rect, board: &Board) {
    let block = Block::bordered().title(" Pools (spent + reserved of the tightest limit) ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = Layout::vertical(vec![Constraint::Length(1); board.pools.len().max(1)]).split(inner);
    for (p, row) in board.pools.iter().zip(rows.iter()) {
        let pct = pool_percent(p).unwrap_or(0).min(100);
        let color = match pct {
            0..=59 => Color::Green,
            60..=89 => Color::Yellow,
            _ => Color::Red,
        };
        f.render_widget(
            Gauge::default()
                .gauge_style(Style::default().fg(color))
                .percent(pct as u16)
                .label(format!("{} {pct}%", p.path)),
            *row,
        );
    }
}

fn approvals_panel(f: &mut Frame, area: Rect, demo: &Demo, board: &Board) {
    let waiting = board.approvals.0.saturating_sub(board.approvals.1);
    let text = Text::from(vec![
        Line::from(format!("waiting: {waiting}")).bold(),
        Line::from(format!("requested: {}", board.approvals.0)),
        Line::from(format!(
            "operator: approved {}, denied {}",
            demo.live.answered[0].load(Ordering::Relaxed),
            demo.live.answered[1].load(Ordering::Relaxed)
        )),
        Line::from("(answers after 2-8 s; the rest time out)").dim(),
    ]);
    f.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" Approvals ")),
        area,
    );
}

fn recent_panel(f: &mut Frame, area: Rect, board: &Board) {
    let rows = area.height.saturating_sub(2) as usize;
    let items: Vec<ListItem> = board
        .recent
        .iter()
        .rev()
        .take(rows)
        .map(|l| ListItem::new(l.as_str()))
        .collect();
    let title = match board.missed {
        0 => " Latest halts (cause chain after <-) ".to_string(),
        n => format!(" Latest halts (cause chain after <-; {n} events missed) "),
    };
    f.render_widget(List::new(items).block(Block::bordered().title(title)), area);
}
