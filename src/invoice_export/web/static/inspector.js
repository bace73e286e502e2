// The inspector's export panel: starts, cancels and retries runs through the JSON API and shows
// the run live. Updates arrive as Server-Sent Events from /api/exports/{run_id}/events; if the
// stream fails, the page polls GET /api/exports/{run_id} every second instead until the run ends.
(function () {
  "use strict";
  const panel = document.getElementById("export-panel");
  if (!panel) return;
  const $ = (id) => document.getElementById(id);
  const csrf = panel.dataset.csrf;
  const ACTIVE = ["queued", "running"];
  const WORDS = { queued: "Queued", running: "Running", completed: "Completed", failed: "Failed", canceled: "Canceled" };
  const POLL_MS = 1000;

  let run = panel.dataset.run ? JSON.parse(panel.dataset.run) : null;
  let source = null;
  let pollTimer = null;
  let tickTimer = null;

  const number = (n) => (n == null ? "0" : Number(n).toLocaleString("en-US"));
  const utcDay = (date) => date.toISOString().slice(0, 10);
  const isToday = (r) => utcDay(new Date(r.requested_at)) === utcDay(new Date());

  function duration(seconds) {
    if (seconds == null) return "–";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    let minutes = Math.floor(Math.round(seconds) / 60);
    const secs = Math.round(seconds) % 60;
    if (minutes < 60) return `${minutes} min ${String(secs).padStart(2, "0")} s`;
    const hours = Math.floor(minutes / 60);
    minutes %= 60;
    return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  }

  function elapsed(r) {
    const from = r.started_at || r.requested_at;
    const to = r.completed_at ? new Date(r.completed_at) : new Date();
    return Math.max((to - new Date(from)) / 1000, 0);
  }

  function words(r) {
    const total = r.pages_total;
    switch (r.status) {
      case "queued": return "Waiting for a worker to pick it up…";
      case "running":
        if (total == null) return "Counting invoices…";
        if (r.pages_done < total) return `Writing page ${r.pages_done + 1} of ${total}`;
        return "Assembling the file and emailing the link…";
      case "completed": return `Done: ${number(r.row_count)} rows in ${total} ${total === 1 ? "page" : "pages"}.`;
      case "failed": return "The export failed.";
      default: return "The export was canceled.";
    }
  }

  function renderPrimary(r) {
    const active = r && ACTIVE.includes(r.status);
    const today = r && isToday(r);
    const doneToday = today && r.status === "completed";
    const retry = today && (r.status === "failed" || r.status === "canceled");
    $("export-form").hidden = doneToday;
    $("download-link").hidden = !doneToday;
    if (doneToday) $("download-link").href = `/exports/${r.export_id}/download`;
    $("export-button").disabled = Boolean(active);
    $("export-button").textContent = retry ? "Retry" : "Export invoices";
    if (active) $("export-reason").textContent = "An export is already running; you can start another when it ends.";
    else if (doneToday) $("export-reason").textContent = "Today's export is ready. The next one can start tomorrow (UTC).";
    else if (retry) $("export-reason").textContent = "Today's export did not finish. Retry starts it again.";
  }

  function render(r, initial = false) {
    const previous = run;
    run = r;
    const total = r.pages_total;
    const done = r.status === "completed" && total != null ? total : r.pages_done;
    $("run").hidden = false;
    $("run").className = `run is-${r.status}`;
    $("run-status").textContent = WORDS[r.status];
    $("run-status").className = `badge s-${r.status}`;
    const sentence = words(r);
    if ($("run-words").textContent !== sentence) $("run-words").textContent = sentence;
    const bar = $("progress");
    bar.setAttribute("aria-valuemax", String(total || 1));
    bar.setAttribute("aria-valuenow", String(total ? done : 0));
    bar.setAttribute("aria-valuetext", total != null ? `${done} of ${total} pages` : "not started");
    $("progress-bar").style.width = total ? `${Math.round((100 * done) / total)}%` : "0%";
    $("f-pages").textContent = `${done} of ${total != null ? total : "?"}`;
    $("f-rows").textContent = number(r.rows_written);
    $("f-attempts").textContent = String(Math.max(r.attempts, r.status === "queued" ? 0 : 1));
    $("f-elapsed").textContent = duration(elapsed(r));
    $("run-error").hidden = !r.error;
    $("run-error-text").textContent = r.error || "";
    $("cancel-button").hidden = !ACTIVE.includes(r.status);
    $("cancel-button").disabled = false;
    $("details-link").href = `/runs/${encodeURIComponent(r.run_id)}`;
    renderPrimary(r);
    const changed = !previous || previous.run_id !== r.run_id || previous.status !== r.status;
    if (changed && !initial) {
      // Announced once per change of state, not on every page.
      $("run-announce").textContent = `Export ${WORDS[r.status].toLowerCase()}. ${sentence}`;
      refreshRecent();
    }
    clearInterval(tickTimer);
    if (ACTIVE.includes(r.status)) tickTimer = setInterval(() => { $("f-elapsed").textContent = duration(elapsed(run)); }, 1000);
  }

  async function refreshRecent() {
    const box = $("recent");
    try {
      const res = await fetch(box.dataset.src, { headers: { Accept: "text/html" } });
      if (res.ok) box.innerHTML = await res.text();
    } catch (e) { /* the table is a convenience; the next change refreshes it */ }
  }

  function stopWatching() {
    if (source) { source.close(); source = null; }
    clearTimeout(pollTimer);
  }

  function watch(runId) {
    stopWatching();
    if (!window.EventSource) { poll(runId); return; }
    source = new EventSource(`/api/exports/${encodeURIComponent(runId)}/events`);
    source.addEventListener("open", () => { $("live-note").textContent = "Live"; });
    source.addEventListener("export", (event) => {
      const r = JSON.parse(event.data);
      render(r);
      if (!ACTIVE.includes(r.status)) { stopWatching(); $("live-note").textContent = ""; }
    });
    source.addEventListener("error", () => {
      stopWatching();
      $("live-note").textContent = "Live updates interrupted; checking every second.";
      poll(runId);
    });
  }

  async function poll(runId) {
    try {
      const res = await fetch(`/api/exports/${encodeURIComponent(runId)}`, { headers: { Accept: "application/json" } });
      if (res.ok) {
        const r = await res.json();
        render(r);
        if (!ACTIVE.includes(r.status)) { $("live-note").textContent = ""; return; }
      }
    } catch (e) { /* server restarting or network blip: try again */ }
    pollTimer = setTimeout(() => poll(runId), POLL_MS);
  }

  async function problem(res) {
    try { return (await res.json()).detail || res.statusText; } catch (e) { return res.statusText || "request failed"; }
  }

  async function post(url) {
    return fetch(url, { method: "POST", headers: { Accept: "application/json", "X-CSRF-Token": csrf } });
  }

  $("export-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("export-button");
    button.disabled = true;
    try {
      const res = await post("/api/exports");
      if (!res.ok) throw new Error(await problem(res));
      const r = await res.json();
      render(r);
      if (ACTIVE.includes(r.status)) watch(r.run_id);
    } catch (e) {
      button.disabled = false;
      $("export-reason").textContent = `Could not start the export: ${e.message}`;
    }
  });

  $("cancel-button").addEventListener("click", async () => {
    if (!run) return;
    const button = $("cancel-button");
    button.disabled = true;
    try {
      const res = await post(`/api/exports/${encodeURIComponent(run.run_id)}/cancel`);
      if (!res.ok) throw new Error(await problem(res));
      render(await res.json());
    } catch (e) {
      button.disabled = false;
      $("live-note").textContent = `Could not cancel: ${e.message}`;
    }
  });

  if (run) {
    render(run, true);
    if (ACTIVE.includes(run.status)) watch(run.run_id);
  }
})();
