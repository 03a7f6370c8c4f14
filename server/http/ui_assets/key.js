// The API key, kept in sessionStorage (this tab only), and fetch with it.
// When the server answers 401, the key dialog asks for one and the request
// is tried again.
"use strict";

const EmberKey = (() => {
  const SLOT = "emberd-api-key";
  let asking = null;

  function get() {
    return sessionStorage.getItem(SLOT) || "";
  }

  function forget() {
    sessionStorage.removeItem(SLOT);
    refreshForget();
  }

  function refreshForget() {
    const button = document.getElementById("key-forget");
    if (button) button.classList.toggle("hidden", !get());
  }

  // The dialog, made on first use: every page that loads this file can ask.
  function dialogElement() {
    let dialog = document.getElementById("key-dialog");
    if (dialog) return dialog;
    dialog = document.createElement("dialog");
    dialog.id = "key-dialog";
    const form = document.createElement("form");
    form.method = "dialog";
    const title = document.createElement("h2");
    title.textContent = "This server needs an API key";
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "It is kept for this tab only, and sent only with this page's requests to this server.";
    const input = document.createElement("input");
    Object.assign(input, { id: "key-input", type: "password", autocomplete: "off", placeholder: "API key", required: true });
    const row = document.createElement("div");
    row.className = "row";
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Use key";
    row.append(button);
    form.append(title, note, input, row);
    dialog.append(form);
    document.body.append(dialog);
    return dialog;
  }

  function ask() {
    if (asking) return asking;
    const dialog = dialogElement();
    const input = document.getElementById("key-input");
    asking = new Promise((resolve) => {
      dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        if (input.value) sessionStorage.setItem(SLOT, input.value);
        input.value = "";
        asking = null;
        refreshForget();
        resolve(get());
      });
      dialog.showModal();
      input.focus();
    });
    return asking;
  }

  function headers(extra) {
    const all = Object.assign({}, extra || {});
    const key = get();
    if (key) all.Authorization = "Bearer " + key;
    return all;
  }

  // fetch() with the key; a 401 asks for a key once and retries.
  async function request(url, options) {
    const opts = Object.assign({}, options || {});
    let response = await fetch(url, Object.assign({}, opts, { headers: headers(opts.headers) }));
    if (response.status === 401) {
      sessionStorage.removeItem(SLOT);
      await ask();
      response = await fetch(url, Object.assign({}, opts, { headers: headers(opts.headers) }));
    }
    return response;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("key-forget");
    if (button) button.addEventListener("click", forget);
    refreshForget();
  });

  return { get, headers, request, forget };
})();
