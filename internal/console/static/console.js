// Keyline console: small enhancements on server-rendered pages. Every page
// works without this script; it adds modal dialogs, live task progress,
// dependent form fields and the Activity Tracker's follow mode.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Dialogs rendered open become modal: focus stays inside, Escape cancels.
  document.querySelectorAll("dialog[data-modal][open]").forEach((d) => {
    d.close();
    d.showModal();
    d.addEventListener("cancel", () => {
      const back = d.querySelector("a.button");
      if (back) window.location.href = back.href;
    });
  });

  // Copy buttons put their value (a key's CRN) on the clipboard.
  document.querySelectorAll("button[data-copy]").forEach((btn) => {
    const label = btn.textContent;
    btn.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(btn.dataset.copy);
        btn.textContent = "Copied";
      } catch (e) {
        btn.textContent = "Copy failed: select the text";
      }
      setTimeout(() => { btn.textContent = label; }, 3000);
    });
  });

  document.querySelectorAll("[data-back]").forEach((a) => {
    a.addEventListener("click", (e) => {
      if (history.length > 1) { e.preventDefault(); history.back(); }
    });
  });

  // A field shown only when a radio is chosen (source instance).
  document.querySelectorAll("[data-show-when]").forEach((el) => {
    const radio = document.getElementById(el.dataset.showWhen);
    const label = document.querySelector(`label[for="${el.id}"]`);
    const sync = () => {
      const on = radio && radio.checked;
      el.hidden = !on;
      if (label) label.hidden = !on;
    };
    document.querySelectorAll(`input[name="${radio ? radio.name : ""}"]`).forEach((r) => r.addEventListener("change", sync));
    sync();
  });

  // The KMS instance select narrows the disk key select to its keys.
  document.querySelectorAll("select[data-filters]").forEach((sel) => {
    const target = document.getElementById(sel.dataset.filters);
    if (!target) return;
    const sync = () => {
      target.required = !!sel.value; // an instance chosen needs one of its keys
      target.querySelectorAll("optgroup").forEach((g) => {
        const show = !sel.value || g.dataset.instance === sel.value;
        g.hidden = !show;
        g.disabled = !show;
      });
      const chosen = target.selectedOptions[0];
      if (chosen && chosen.parentElement.disabled) target.value = "";
      if (sel.value && !target.value) {
        const first = target.querySelector(`optgroup[data-instance="${sel.value}"] option`);
        if (first) target.value = first.value;
      }
    };
    sel.addEventListener("change", sync);
    sync();
  });

  // The access policy form: the service narrows the instances to its own,
  // and the Event Streams scope shows only for Event Streams.
  document.querySelectorAll("select[data-narrows]").forEach((sel) => {
    const target = document.getElementById(sel.dataset.narrows);
    if (!target) return;
    const sync = () => {
      target.querySelectorAll("optgroup[data-service]").forEach((g) => {
        g.hidden = g.disabled = g.dataset.service !== sel.value;
      });
      const chosen = target.selectedOptions[0];
      if (chosen && chosen.parentElement.disabled) target.value = "";
      document.querySelectorAll("[data-service-only]").forEach((el) => {
        el.hidden = el.dataset.serviceOnly !== sel.value;
        el.querySelectorAll("select, input").forEach((f) => { f.disabled = el.hidden; });
      });
    };
    sel.addEventListener("change", sync);
    sync();
  });

  // Tasks panel: refresh every second while a task is queued or running,
  // and every few seconds otherwise, since a key rotated elsewhere starts one.
  const panel = document.getElementById("tasks-panel");
  if (panel) {
    const busy = () => {
      const list = panel.querySelector("#tasks");
      return !!list && list.dataset.polling === "true";
    };
    const poll = async () => {
      try {
        const resp = await fetch(panel.dataset.poll, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (resp.redirected) { window.location.reload(); return; } // signed out: show the sign-in page
        if (resp.ok) panel.innerHTML = await resp.text();
      } catch (e) { /* keep the last state; retry */ }
      setTimeout(poll, busy() ? 1000 : 3000);
    };
    setTimeout(poll, busy() ? 1000 : 3000);
  }

  // Activity Tracker follow mode through the console's event stream.
  const follow = document.getElementById("follow");
  if (follow) {
    let source = null;
    const status = document.getElementById("follow-status");
    const tbody = document.querySelector("#events tbody");
    const cell = (label, cls, text) => {
      const td = document.createElement("td");
      td.dataset.label = label;
      if (cls) td.className = cls;
      if (text !== undefined) td.textContent = text;
      return td;
    };
    // shortCRN keeps the distinguishing end of a CRN, as the server does.
    const shortCRN = (s) => {
      const p = s.split(":");
      if (p.length !== 10) return s;
      return p[9] ? `${p[4]} … ${p[8]}:${p[9]}` : `${p[4]}:${p[5]} … ${p[7]}`;
    };
    const add = (ev) => {
      const tr = document.createElement("tr");
      tr.dataset.action = ev.action;
      tr.className = "fresh";
      tr.append(cell("Time", "nowrap", (ev.eventTime || "").replace("T", " ").replace(/\.\d+([+-]\d{4})$/, " UTC")));
      const sev = cell("Severity");
      const s = document.createElement("span");
      s.className = "sev " + ev.severity;
      s.textContent = ev.severity;
      sev.append(s);
      tr.append(sev);
      const act = cell("Action", "action");
      const code = document.createElement("code");
      code.textContent = ev.action;
      const msg = document.createElement("div");
      msg.className = "sub";
      msg.textContent = ev.message || "";
      act.append(code, msg);
      tr.append(act);
      const target = cell("Target", "target");
      const crn = document.createElement("span");
      crn.className = "mono";
      crn.title = (ev.target && ev.target.id) || "";
      crn.textContent = shortCRN(crn.title);
      target.append(crn);
      tr.append(target);
      const out = cell("Outcome");
      const b = document.createElement("span");
      b.className = "badge " + (ev.outcome === "success" ? "ok" : ev.outcome === "failure" ? "bad" : "info");
      b.textContent = ev.outcome;
      out.append(b);
      tr.append(out);
      tr.append(cell("Initiator", "wrap", (ev.initiator && (ev.initiator.name || ev.initiator.id)) || ""));
      tbody.prepend(tr);
      const empty = document.getElementById("no-events");
      if (empty) empty.remove();
    };
    follow.addEventListener("click", () => {
      if (source) {
        source.close();
        source = null;
        follow.setAttribute("aria-pressed", "false");
        follow.textContent = "Follow live";
        status.textContent = "Stopped following.";
        return;
      }
      source = new EventSource(follow.dataset.stream);
      follow.setAttribute("aria-pressed", "true");
      follow.textContent = "Stop following";
      status.textContent = "Connecting…";
      source.onmessage = (m) => {
        try { add(JSON.parse(m.data)); } catch (e) { /* not an event */ }
      };
      source.onerror = () => { status.textContent = "Connection lost; reconnecting…"; };
      source.onopen = () => { status.textContent = "Following: new events appear at the top."; };
    });
  }
});
