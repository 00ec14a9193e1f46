// Server-rendered regions, refreshed in place. A region is an element with an id and `data-swap`;
// swapRegions() replaces each one's content with the same region of another rendering of the page,
// and leaves everything else alone (typed text, chosen files, scroll position).
window.genhub = window.genhub || {};

window.genhub.swapRegions = function swapRegions(html) {
  const fresh = new DOMParser().parseFromString(html, "text/html");
  document.querySelectorAll("[data-swap][id]").forEach((region) => {
    const next = fresh.getElementById(region.id);
    if (next) region.innerHTML = next.innerHTML;
  });
  // A field's error styling and aria-invalid follow the new rendering too.
  document.querySelectorAll(".field[id]").forEach((field) => {
    const next = fresh.getElementById(field.id);
    if (next) field.className = next.className;
  });
  document.querySelectorAll("input[id], select[id], textarea[id]").forEach((control) => {
    const next = fresh.getElementById(control.id);
    if (!next) return;
    if (next.hasAttribute("aria-invalid")) control.setAttribute("aria-invalid", next.getAttribute("aria-invalid"));
    else control.removeAttribute("aria-invalid");
  });
  return fresh;
};

// Regions with `data-refresh-seconds` re-render themselves from the server every so often
// (the GPU instance panel), keeping open <details> open.
document.querySelectorAll("[data-swap][data-refresh-seconds][id]").forEach((region) => {
  const every = Number(region.dataset.refreshSeconds) * 1000;
  async function refresh() {
    if (!document.hidden) {
      try {
        const response = await fetch(location.href, { headers: { "X-Requested-With": "fetch" }, cache: "no-store" });
        if (response.ok) {
          const open = [...region.querySelectorAll("details[id]")].map((d) => [d.id, d.open]);
          window.genhub.swapRegions(await response.text());
          open.forEach(([id, isOpen]) => { const d = document.getElementById(id); if (d) d.open = isOpen; });
        }
      } catch (error) {
        // Offline for a moment: try again at the next tick.
      }
    }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
});
