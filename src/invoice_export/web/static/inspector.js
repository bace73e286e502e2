// Live progress for the inspector: start the export through the API (no page reload) and poll
// GET /api/exports/{run_id} until the run ends.
(function () {
  "use strict";
  const panel = document.getElementById("export-panel");
  if (!panel) return;
  const csrf = panel.dataset.csrf;
  const $ = (id) => document.getElementById(id);
  const TERMINAL = ["completed", "failed", "canceled"];
  let runId = panel.dataset.runId || "";
  let timer = null;

  function render(run) {
    $("run").hidden = false;
    $("run-id").textContent = run.run_id;
    $("run-status").textContent = run.status;
    $("run-status").className = "status s-" + run.status;
    const total = run.pages_total || 0;
    const done = run.pages_done || 0;
    const bar = $("progress");
    bar.setAttribute("aria-valuemax", String(total));
    bar.setAttribute("aria-valuenow", String(done));
    bar.setAttribute("aria-valuetext", total ? `${done} of ${total} pages` : "waiting to start");
    $("progress-bar").style.width = total ? `${Math.round((100 * done) / total)}%` : "0%";
    $("progress-text").textContent = total
      ? `${done} of ${total} pages` + (run.row_count != null ? ` · ${run.row_count} rows` : "") + ` · attempt ${Math.max(run.attempts, 1)}`
      : "Waiting for a worker…";
    $("run-error").hidden = !run.error;
    $("run-error").textContent = run.error || "";
    $("download-row").hidden = run.status !== "completed";
    $("download-link").href = `/exports/${run.export_id}/download`;
    $("export-button").disabled = !TERMINAL.includes(run.status);
  }

  async function poll() {
    if (!runId) return;
    try {
      const res = await fetch(`/api/exports/${encodeURIComponent(runId)}`, { headers: { Accept: "application/json" } });
      if (res.ok) {
        const run = await res.json();
        render(run);
        if (TERMINAL.includes(run.status)) return;
      }
    } catch (e) { /* network blip or server restart: keep polling */ }
    timer = setTimeout(poll, 300);
  }

  $("export-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("export-button").disabled = true;
    const res = await fetch("/api/exports", {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
    });
    if (!res.ok) { $("export-button").disabled = false; return; }
    const run = await res.json();
    runId = run.run_id;
    render(run);
    clearTimeout(timer);
    poll();
  });

  const autosubmit = document.querySelector("[data-autosubmit]");
  if (autosubmit) autosubmit.addEventListener("change", () => autosubmit.form.submit());
  poll();
})();
