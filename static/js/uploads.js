// Drag and drop of a whole folder onto the upload form.
//
// A dropped folder is walked with the File and Directory Entries API, and every file is sent
// with its path relative to the drop (e.g. "photos/birds/parrot.png") as its file name - the
// same thing a browser sends for <input webkitdirectory> - so class sub-folders survive.
// The reply is the per-file report fragment (asked for with HX-Request, as htmx would).
// Without this script the folder picker and the zip input still post as a plain form.
(function () {
  "use strict";

  const form = document.getElementById("upload-form");
  const zone = document.getElementById("dropzone");
  const status = document.getElementById("dropzone-status");
  if (!form || !zone) return;

  function readAll(reader) {
    // readEntries returns at most ~100 entries per call: call it until it returns none.
    return new Promise((resolve, reject) => {
      const out = [];
      const next = () => reader.readEntries((batch) => {
        if (batch.length === 0) { resolve(out); return; }
        out.push(...batch);
        next();
      }, reject);
      next();
    });
  }

  async function walk(entry, prefix, files) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      files.push([prefix + entry.name, file]);
    } else if (entry.isDirectory) {
      const children = await readAll(entry.createReader());
      for (const child of children) {
        await walk(child, prefix + entry.name + "/", files);
      }
    }
  }

  async function upload(pairs) {
    const data = new FormData();
    for (const field of ["name", "class_names"]) {
      const input = form.elements.namedItem(field);
      if (input && input.value) data.append(field, input.value);
    }
    for (const [path, file] of pairs) data.append("files", file, path);
    status.textContent = "Uploading " + pairs.length + " files and checking every image...";
    const reply = await fetch(form.action, {
      method: "POST", body: data, headers: { "HX-Request": "true" },
    });
    const html = await reply.text();
    const target = document.getElementById("report");
    if (target) target.outerHTML = html;
    status.textContent = reply.ok ? "" : "The upload was refused: see below.";
  }

  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const entries = [...event.dataTransfer.items]
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
      .filter((entry) => entry !== null);
    const pairs = [];
    try {
      for (const entry of entries) await walk(entry, "", pairs);
      if (pairs.length === 0) { status.textContent = "Nothing to upload in what was dropped."; return; }
      await upload(pairs);
    } catch (error) {
      status.textContent = "The upload failed: " + error;
    }
  });
})();
