// The new-batch form: an additive file picker with drag and drop, the pairing-mode switch, the
// parameter defaults as placeholders, and a submit that stays on the page so a validation error
// does not lose the chosen files. Without this script the form still works as a plain POST.
(() => {
  const form = document.getElementById("batch-form");
  if (!form) return;
  const input = document.getElementById("id_images");
  const list = document.getElementById("file-list");
  const zone = form.querySelector("[data-dropzone]");
  const status = document.getElementById("form-status");
  const MAX_LISTED = 200;

  // --- files: picking or dropping adds to the selection; each file can be removed -------------
  let chosen = new DataTransfer();
  let thumbnails = [];
  const keyOf = (file) => `${file.name}|${file.size}|${file.lastModified}`;
  const sizeText = (bytes) => (bytes < 1024 * 1024 ? `${Math.ceil(bytes / 1024)} KB` : `${(bytes / 1048576).toFixed(1)} MB`);

  function add(files) {
    const have = new Set([...chosen.files].map(keyOf));
    for (const file of files) {
      if (!have.has(keyOf(file))) { chosen.items.add(file); have.add(keyOf(file)); }
    }
    input.files = chosen.files;
    render();
  }

  function keepOnly(predicate) {
    const next = new DataTransfer();
    [...chosen.files].forEach((file, index) => { if (predicate(file, index)) next.items.add(file); });
    chosen = next;
    input.files = chosen.files;
    render();
  }

  function render() {
    thumbnails.forEach((url) => URL.revokeObjectURL(url));
    thumbnails = [];
    list.replaceChildren();
    const files = [...chosen.files];
    if (!files.length) return;
    const head = document.createElement("p");
    const total = files.reduce((sum, file) => sum + file.size, 0);
    head.textContent = `${files.length} file${files.length === 1 ? "" : "s"} chosen (${sizeText(total)}). `;
    const clear = document.createElement("button");
    clear.type = "button";
    clear.className = "button-link";
    clear.textContent = "Remove all";
    clear.addEventListener("click", () => { keepOnly(() => false); input.focus(); });
    head.append(clear);
    list.append(head);
    const ul = document.createElement("ul");
    const tagFor = (file) => {
      const tag = document.createElement("span");
      tag.className = "file-tag";
      tag.textContent = file.name.toLowerCase().endsWith(".zip") ? "ZIP" : "?";
      return tag;
    };
    files.slice(0, MAX_LISTED).forEach((file, index) => {
      const li = document.createElement("li");
      li.dataset.name = file.name;
      if (file.type.startsWith("image/")) {
        const img = document.createElement("img");
        img.src = URL.createObjectURL(file);
        img.alt = "";
        img.addEventListener("error", () => img.replaceWith(tagFor(file)));  // named .png, but is not one
        thumbnails.push(img.src);
        li.append(img);
      } else {
        li.append(tagFor(file));
      }
      const name = document.createElement("span");
      name.className = "file-name";
      name.textContent = `${file.name} · ${sizeText(file.size)}`;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button-link";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      remove.addEventListener("click", () => { keepOnly((_, i) => i !== index); input.focus(); });
      li.append(name, remove);
      ul.append(li);
    });
    list.append(ul);
    if (files.length > MAX_LISTED) {
      const more = document.createElement("p");
      more.textContent = `…and ${files.length - MAX_LISTED} more.`;
      list.append(more);
    }
    markProblems();
  }

  // The server names the files it refused (data-item in the errors next to the images): mark them.
  function markProblems() {
    const problems = new Map();
    document.querySelectorAll("#err-images [data-item]").forEach((p) => problems.set(p.dataset.item, p.textContent.trim()));
    list.querySelectorAll("li[data-name]").forEach((li) => {
      const problem = problems.get(li.dataset.name);
      li.classList.toggle("bad", Boolean(problem));
      li.title = problem || "";
    });
  }

  input.addEventListener("change", () => add(input.files));
  // Files may already be chosen when this script starts: picked while the page was still loading
  // (a slow network or a busy machine), or restored by the browser on Back. No change event
  // will come for those, so take them now.
  if (input.files.length) add(input.files);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    add(event.dataTransfer.files);
  });

  // --- pairing mode: show only what the chosen mode uses -----------------------------------
  const promptLabel = form.querySelector("label[for=id_prompt]");
  function showPairing() {
    const mode = (form.querySelector("input[name=pairing]:checked") || {}).value || "prompt";
    form.querySelectorAll("[data-pairing]").forEach((el) => { el.hidden = !el.dataset.pairing.split(" ").includes(mode); });
    promptLabel.textContent = mode === "rows" ? "Prompt for rows and images without their own" : "Prompt";
  }
  form.querySelectorAll("input[name=pairing]").forEach((radio) => radio.addEventListener("change", showPairing));
  showPairing();

  // --- parameter defaults: what a blank field will be, for the chosen preset and provider ----
  const defaults = JSON.parse(document.getElementById("param-defaults").textContent);
  function showDefaults() {
    const provider = (form.querySelector("input[name=provider]:checked") || {}).value || "fal";
    const merged = { ...(defaults.presets[form.elements.preset.value] || {}), ...(defaults.providers[provider] || {}) };
    ["num_frames", "fps", "steps", "cfg"].forEach((name) => { form.elements[name].placeholder = merged[name] ?? ""; });
    form.elements.resolution.options[0].textContent = `Preset (${merged.resolution})`;  // short: it must fit the select
  }
  form.elements.preset.addEventListener("change", showDefaults);
  form.querySelectorAll("input[name=provider]").forEach((radio) => radio.addEventListener("change", showDefaults));
  showDefaults();

  // --- fallback: the number's label says what it counts under the chosen policy ------------
  // (It stays visible and focusable whatever is chosen; the server ignores it under "Never".)
  const afterLabel = document.getElementById("label-fallback_after");
  const AFTER_LABELS = {
    unrecoverable: "N: minutes the GPU may be unavailable before the waiting jobs move",
    attempts: "K: failed attempts on the GPU before a job moves",
  };
  const afterDefault = afterLabel.textContent;
  function showFallback() {
    const policy = (form.querySelector("input[name=fallback]:checked") || {}).value;
    afterLabel.textContent = AFTER_LABELS[policy] || afterDefault;
  }
  form.querySelectorAll("input[name=fallback]").forEach((radio) => radio.addEventListener("change", showFallback));
  showFallback();

  // --- sections that apply to one provider only: a fal.ai batch has no GPU to fall back from ------
  const fallbackSection = document.getElementById("field-fallback");
  function showProviderSections() {
    const provider = (form.querySelector("input[name=provider]:checked") || {}).value || "fal";
    fallbackSection.hidden = provider !== "vastai";
  }
  form.querySelectorAll("input[name=provider]").forEach((radio) => radio.addEventListener("change", showProviderSections));
  showProviderSections();

  // --- submit in place: errors and the dry run are swapped in; the chosen files stay ---------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submitter = event.submitter;
    const data = new FormData(form);
    if (submitter && submitter.name) data.set(submitter.name, submitter.value);
    const creating = data.get("action") !== "estimate";
    const buttons = form.querySelectorAll("button[type=submit]");
    buttons.forEach((button) => { button.disabled = true; });
    form.setAttribute("aria-busy", "true");
    status.textContent = `${creating ? "Creating the batch" : "Checking"}: uploading ${chosen.files.length} file${chosen.files.length === 1 ? "" : "s"}…`;
    try {
      const response = await fetch(form.getAttribute("action"), {
        method: "POST", body: data, credentials: "same-origin", headers: { "X-Requested-With": "fetch" },
      });
      if (response.status === 201) {
        status.textContent = "Created. Opening the batch…";
        location.assign(response.headers.get("Location"));
        return;
      }
      if (response.status !== 200 && response.status !== 400) {
        status.textContent = `The server answered ${response.status}; nothing was created. Try again.`;
        return;
      }
      window.genhub.swapRegions(await response.text());
      document.querySelectorAll(".files-again").forEach((note) => note.remove());  // the files were kept
      markProblems();
      const summary = document.querySelector(".error-summary");
      const dryRun = document.querySelector(".dry-run");
      status.textContent = summary ? "Not created: see the problems listed above." : "Dry run ready below.";
      (summary || dryRun || status).focus();
    } catch (error) {
      status.textContent = `Could not reach the server (${error.message}); nothing was created.`;
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
      form.removeAttribute("aria-busy");
    }
  });

  // Everything above is listening now; tests (and anything else that drives the page) wait for this
  // rather than guessing how long the script takes to start.
  form.dataset.ready = "true";
})();
