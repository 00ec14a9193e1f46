// The batch page, live: every 2 s it asks the JSON API (the same data the API serves to scripts) for
// what changed since its last look — the batch's counts and state, and only the jobs that changed
// (`GET /api/batches/{id}/jobs/?since=<cursor>`) — and updates the summary and the shown job cards in
// place, until the batch is finished. A 10,000-job batch costs a poll the size of what changed.
(() => {
  const summary = document.getElementById("batch-summary");
  if (!summary) return;
  const costs = document.getElementById("batch-costs");
  const api = summary.dataset.batchApi;
  const config = JSON.parse(document.getElementById("batch-live-config").textContent);
  const labels = config.labels;
  const FINISHED = new Set(config.finished);  // batch statuses after which nothing changes by itself
  const ACTIVE = new Set(config.active);  // unfinished job statuses: they can still be cancelled
  const EVERY_MS = 2000;
  let cursor = config.cursor;  // taken by the server before it rendered the cards

  const percent = (value) => `${Math.round(value * 100)}%`;
  const money = (value, places) => `$${Number(value).toFixed(places)}`;

  function setBadge(badge, status) {
    if (badge.textContent !== (labels[status] || status)) badge.textContent = labels[status] || status;
    badge.className = `badge status-${status}`;
  }

  function setProgress(root, name, value) {
    const bar = root.querySelector(`[data-field="${name}"]`);
    const text = root.querySelector(`[data-field="${name}-text"]`);
    if (bar) bar.value = value;
    if (text) text.textContent = percent(value);
  }

  function showWhen(root, conditions) {
    root.querySelectorAll("[data-when]").forEach((el) => { el.hidden = !conditions[el.dataset.when]; });
  }

  // A note that is shown only while it has something to say (the card renders it, hidden, either way).
  function setNote(card, name, text, show) {
    const note = card.querySelector(`[data-field="${name}"]`);
    const body = card.querySelector(`[data-field="${name}-reason"]`);
    if (body.textContent !== text) body.textContent = text;
    note.hidden = !show;
  }

  // The same wording as views.saving_text.
  function savingText(saving) {
    if (saving > 0) return `saved ${money(saving, 4)}`;
    if (saving < 0) return `cost ${money(-saving, 4)} more`;
    return "cost the same";
  }

  function updateCard(job) {
    const card = document.getElementById(`job-${job.id}`);
    if (!card) return;
    // The phase is the status as a person reads it ("Next on the GPU" rather than "Running 0%").
    const phase = job.phase || job.status;
    card.className = `card status-${job.status}`;
    card.dataset.phase = phase;
    setBadge(card.querySelector('[data-field="status"]'), phase);
    setProgress(card, "progress", job.progress);
    card.querySelector('[data-field="attempts"]').textContent = `${job.attempts} of ${job.max_attempts}`;
    card.querySelector('[data-field="cost"]').textContent = job.cost_usd === null ? "—" : money(job.cost_usd, 4);
    setNote(card, "paused", job.paused_reason, job.status === "paused" && Boolean(job.paused_reason));
    setNote(card, "fallback", job.fallback_reason, Boolean(job.fallback_from));
    const queued = job.status === "running" && job.queue_position !== null;
    setNote(card, "queue", queued ? `waiting in fal's queue: ${job.queue_position} request${job.queue_position === 1 ? "" : "s"} ahead` : "", queued);
    const error = card.querySelector('[data-field="error"]');
    error.textContent = job.error ? job.error.message : "";
    error.hidden = !job.error;
    const media = card.querySelector('[data-field="media"]');
    if (job.output_url && !media.querySelector("video")) {
      const video = document.createElement("video");
      video.controls = true;
      video.preload = "none";
      video.playsInline = true;
      if (job.poster_url) video.poster = job.poster_url;
      video.src = job.output_url;
      video.setAttribute("aria-label", `Video made from ${job.input_name}`);
      media.replaceChildren(video);
    }
    // An item by URL: its picture appears once fetched, or the card says there is none.
    const placeholder = media.querySelector(".no-image");
    if (placeholder && !job.output_url && job.status !== "fetching") {
      if (job.error && job.error.code === "image_unavailable") {
        placeholder.textContent = "No image";
      } else {
        const img = document.createElement("img");
        img.src = media.dataset.input;
        img.alt = `Input image ${job.input_name}`;
        media.replaceChildren(img);
      }
    }
    showWhen(card, {
      // A bar only while it generates: waiting, paused or finished jobs say so in their badge.
      progress: phase === "running",
      active: ACTIVE.has(job.status),
      retryable: job.status === "failed" || job.status === "cancelled",
      video: Boolean(job.output_url),
    });
  }

  function updateSummary(batch) {
    setBadge(summary.querySelector('[data-summary="status"]'), batch.status);
    setProgress(summary, "batch-progress", batch.progress);
    summary.querySelector('[data-summary="cost"]').textContent = money(batch.cost_usd, 4);
    // Jobs queued inside SwarmUI are counted apart from the one generating, as the page renders them.
    const counts = { ...batch.counts };
    if (summary.querySelector('[data-count="next_on_gpu"]')) {
      counts.next_on_gpu = batch.next_on_gpu || 0;
      counts.running -= counts.next_on_gpu;
    }
    Object.entries(counts).forEach(([status, n]) => {
      const count = summary.querySelector(`[data-count="${status}"]`);
      if (!count) return;
      count.textContent = n;
      const chip = count.closest("[data-optional]");  // shown only while it counts something
      if (chip) chip.hidden = n === 0;
    });
    const gpu = summary.querySelector('[data-field="gpu"]');
    if (gpu) {
      const message = gpu.querySelector('[data-field="gpu-message"]');
      const text = batch.gpu ? batch.gpu.message : "";
      if (message.textContent !== text) message.textContent = text;
      gpu.className = `gpu-activity${batch.gpu ? ` gpu-${batch.gpu.phase}` : ""}`;
      gpu.hidden = !batch.gpu;
    }
    showWhen(summary, {
      succeeded: batch.counts.succeeded > 0,
      failed: batch.counts.failed > 0,
      paused: batch.counts.paused > 0,
      active: [...ACTIVE].some((status) => batch.counts[status] > 0),
    });
    summary.dataset.finished = String(FINISHED.has(batch.status));
  }

  function updateCosts(batch) {
    if (!costs) return;
    const set = (name, text) => {
      const el = costs.querySelector(`[data-cost="${name}"]`);
      if (el && el.textContent !== text) el.textContent = text;
    };
    const saving = Number(batch.costs.saving);
    set("actual", money(batch.costs.actual, 4));
    set("other", money(batch.costs.other_estimate, 4));
    set("basis", batch.costs.basis);
    set("saving", savingText(saving));
    set("spent", money(batch.cost_usd, 4));
    set("wasted", money(batch.wasted_usd, 4));
    const savingEl = costs.querySelector('[data-cost="saving"]');
    savingEl.className = `saving${saving > 0 ? " saving-positive" : saving < 0 ? " saving-negative" : ""}`;
    savingEl.hidden = batch.counts.succeeded === 0;
    costs.querySelector('[data-cost="none"]').hidden = batch.counts.succeeded > 0;
  }

  const plan = document.getElementById("batch-plan");
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  // When it should be done: the same `eta` the API gives scripts, in the reader's own time zone.
  function updatePlan(batch) {
    if (!plan) return;
    const field = (name) => plan.querySelector(`[data-plan="${name}"]`);
    const eta = batch.eta;
    field("eta").hidden = !eta;
    field("eta-none").hidden = Boolean(eta);
    field("eta-none").textContent = batch.counts.paused > 0
      ? "No estimate while the remaining jobs are paused." : "Nothing is left to do.";
    if (eta) {
      [["eta-at", eta.at], ["eta-low", eta.low], ["eta-high", eta.high]].forEach(([name, iso]) => {
        const el = field(name);
        el.dateTime = iso;
        el.textContent = clock(iso);
      });
      field("eta-basis").textContent = eta.basis;
    }
    const note = field("note");
    if (note) {
      note.textContent = batch.deadline_note;
      note.hidden = !batch.deadline_note;
    }
    const moved = field("moved");
    if (moved) {
      field("moved-n").textContent = batch.deadline_moved;
      moved.hidden = !batch.deadline_moved;
    }
  }

  async function poll() {
    try {
      const response = await fetch(`${api}?since=${encodeURIComponent(cursor)}`, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
      if ([401, 403, 404].includes(response.status)) return;  // logged out or gone: stop asking
      if (response.ok) {
        const changes = await response.json();
        if (changes.resync) {  // too much changed while we were away: the page itself is the fresh copy
          window.location.reload();
          return;
        }
        cursor = changes.cursor;
        changes.results.forEach(updateCard);  // cards of other pages are simply not here
        const batch = changes.batch;
        updateSummary(batch);
        updateCosts(batch);
        updatePlan(batch);
        if (FINISHED.has(batch.status)) return;
      }
    } catch (error) {
      // A dropped request: the next tick tries again.
    }
    setTimeout(poll, EVERY_MS);
  }

  if (summary.dataset.finished !== "true") setTimeout(poll, EVERY_MS);
  summary.dataset.ready = "true";  // live from here on (tests wait for it instead of guessing)
})();
