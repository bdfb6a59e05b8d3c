// The key-frequency chooser: `root` is the widget's element, `data` what
// groklens::key_explorer::KeyExplorer::chooser wrote (see chooser.rs for its fields).
// Everything additive over frequencies is recomputed here; excluded and restricted
// loss are looked up among the presets the kernel computed.
function groklensChooser(root, data) {
  root.groklensData = data; // for the console, and for scripts/check_chooser.py
  var chosen = new Set(data.key_set);
  var found = new Set(data.key_set);
  var charts = {};
  root.querySelectorAll("[data-chart]").forEach(function (el) { charts[el.dataset.chart] = el; });

  var boxes = root.querySelector(".gl-freqs");
  data.freqs.forEach(function (k) {
    var label = document.createElement("label");
    label.style.cssText = "display:inline-block;width:3.2em;font:12px monospace" + (found.has(k) ? ";font-weight:bold" : "");
    var input = document.createElement("input");
    input.type = "checkbox";
    input.dataset.freq = k;
    input.addEventListener("change", function () {
      if (input.checked) chosen.add(k); else chosen.delete(k);
      update();
    });
    label.appendChild(input);
    label.appendChild(document.createTextNode(k));
    boxes.appendChild(label);
  });
  var select = root.querySelector(".gl-presets");
  data.presets.forEach(function (preset, i) {
    var option = document.createElement("option");
    option.value = i;
    option.textContent = preset.name + ": " + preset.freqs.join(", ");
    select.appendChild(option);
  });
  select.addEventListener("change", function () {
    if (select.value !== "") choose(data.presets[+select.value].freqs);
  });
  root.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var action = button.dataset.action;
      choose(action === "found" ? data.key_set : action === "all" ? data.freqs : []);
    });
  });

  function choose(freqs) {
    chosen = new Set(freqs);
    update();
  }
  function sumIn(rows, ks) {
    return rows.map(function (row) { return ks.reduce(function (s, k) { return s + row[k - 1]; }, 0); });
  }
  function residual(rows, ks) {
    return rows.map(function (row) {
      var explained = ks.reduce(function (s, k) { return s + row[k - 1] * row[k - 1]; }, 0);
      return Math.sqrt(Math.max(0, 1 - explained));
    });
  }
  function layout(title, xTitle, yTitle, extra) {
    var shapes = xTitle === "Epoch" ? data.phase_lines.map(function (x) {
      return { type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { dash: "dash", width: 2 }, opacity: 0.7 };
    }) : [];
    return Object.assign({
      title: { text: title, font: { size: 20 } }, showlegend: true, shapes: shapes, height: 380,
      xaxis: { title: { text: xTitle } }, yaxis: { title: { text: yTitle } },
    }, extra || {});
  }
  function trace(name, y, x) {
    return { type: "scatter", mode: "lines", name: name, x: x || data.epochs, y: y };
  }
  function update() {
    var ks = Array.from(chosen).sort(function (a, b) { return a - b; });
    boxes.querySelectorAll("input").forEach(function (input) { input.checked = chosen.has(+input.dataset.freq); });
    var key = ks.join(",");
    var preset = data.presets.find(function (p) { return p.freqs.join(",") === key; });
    select.value = preset ? String(data.presets.indexOf(preset)) : "";
    root.querySelector(".gl-current").textContent = "K = {" + ks.join(", ") + "} (" + ks.length + " of " + data.freqs.length + ")";
    var name = "K = {" + ks.join(", ") + "}";
    Plotly.react(charts.residual, [
      trace("a + b view", residual(data.cos_sims.standard, ks)),
      trace("task view", residual(data.cos_sims.task, ks)),
    ], layout("Residual fraction of the logits outside " + name, "Epoch", "‖L − Σ_K α_k C_k‖ / ‖L‖"));
    Plotly.react(charts.energy, [
      trace("W_E over a", sumIn(data.embed_share, ks)),
      trace("W_out·W_U over c", sumIn(data.logit_map_share, ks)),
    ], layout("Share of the Fourier energy in " + name, "Epoch", "Share"));
    var perNeuron = sumIn(data.neuron_share, ks).sort(function (a, b) { return a - b; });
    Plotly.react(charts.neurons, [
      trace("neurons", perNeuron, perNeuron.map(function (_, i) { return i; })),
    ], layout("Each neuron's output (W_out·W_U row) in " + name + ", final model, sorted", "Neuron (sorted)", "Share of the row's energy"));
    var losses = [trace("train", data.train_loss), trace("test", data.test_loss)];
    var title = "Excluded and restricted loss: ";
    if (preset) {
      losses.push(trace("excluded (train)", preset.excluded), trace("restricted (test)", preset.restricted));
      title += preset.name;
    } else {
      title += "computed for the presets only (run the tweak cell for this set)";
    }
    Plotly.react(charts.losses, losses, layout(title, "Epoch", "Loss", { yaxis: { type: "log", title: { text: "Loss" } } }));
    root.dataset.keyFreqs = key;
  }
  var timer = setInterval(start, 100);
  start();
  function start() {
    if (!window.Plotly) return;
    clearInterval(timer);
    update();
  }
}
