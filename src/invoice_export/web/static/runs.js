// The run page: while the run is queued or running, re-fetch its summary and timeline (rendered
// by the server) whenever its event stream reports a change; poll every second if the stream fails.
(function () {
  "use strict";
  const box = document.getElementById("run-detail");
  if (!box) return;
  const ACTIVE = ["queued", "running"];
  const runId = box.dataset.runId;
  let source = null;
  let busy = false;
  let again = false;

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const res = await fetch(box.dataset.src, { headers: { Accept: "text/html" } });
      if (res.ok) box.innerHTML = await res.text();
    } catch (e) { /* keep the last timeline; the next change refreshes it */ }
    busy = false;
    if (again) { again = false; refresh(); }
  }

  async function poll() {
    await refresh();
    const status = box.querySelector("#detail-status");
    const stillActive = ACTIVE.some((s) => status && status.classList.contains(`s-${s}`));
    if (stillActive) setTimeout(poll, 1000);
  }

  if (!ACTIVE.includes(box.dataset.status)) return;
  if (!window.EventSource) { poll(); return; }
  source = new EventSource(`/api/exports/${encodeURIComponent(runId)}/events`);
  source.addEventListener("export", (event) => {
    const run = JSON.parse(event.data);
    refresh();
    if (!ACTIVE.includes(run.status)) source.close();
  });
  source.addEventListener("error", () => { source.close(); poll(); });
})();
