/* The live run dashboard (templates/pages/run.html): what the page needs beyond htmx markup.
 *
 * - Regions fetch themselves again (htmx event "ie:refresh") when an event of a kind named in
 *   their data-refresh-on arrives over the stream: at most one fetch per region every
 *   REFRESH_MS, and always one after the last event of a burst, so a flood of progress events
 *   costs a few requests and the final state is always shown.
 * - When the SSE extension opens a new stream after a failed one, it resumes from the last
 *   event this page saw (the browser's own reconnects send Last-Event-ID by themselves).
 * - The event log keeps its newest LOG_MAX lines.
 * - The curves and the concept map are drawn with Chart.js from the run's JSON endpoints.
 */
(function () {
  "use strict";

  const live = document.getElementById("live");
  if (!live || !window.htmx) {
    return;
  }
  const REFRESH_MS = 700;
  const LOG_MAX = 200;
  let lastSeen = Number(live.dataset.lastEventId || "0");

  // -- the stream ----------------------------------------------------------------------------

  const createEventSource = htmx.createEventSource;
  htmx.createEventSource = function (url) {
    const resumed = new URL(url, window.location.href);
    resumed.searchParams.set("last_id", String(lastSeen));
    return createEventSource
      ? createEventSource(resumed.toString())
      : new EventSource(resumed.toString());
  };

  const streamState = document.getElementById("stream-state");
  function showStream(state, text) {
    if (streamState) {
      streamState.dataset.state = state;
      streamState.textContent = text;
    }
  }
  document.body.addEventListener("htmx:sseOpen", function () {
    showStream("open", "live");
  });
  document.body.addEventListener("htmx:sseError", function () {
    showStream("error", "reconnecting\u2026");
  });

  // -- refreshing regions --------------------------------------------------------------------

  const pending = new Set();
  function schedule(id) {
    if (pending.has(id)) {
      return; // a fetch is already due; it will see this event's effect too
    }
    pending.add(id);
    window.setTimeout(function () {
      pending.delete(id);
      const region = document.getElementById(id); // looked up again: it may have been swapped
      if (region) {
        htmx.trigger(region, "ie:refresh");
      }
    }, REFRESH_MS);
  }

  function trimLog() {
    const log = document.getElementById("event-log");
    while (log && log.children.length > LOG_MAX) {
      log.lastElementChild.remove();
    }
  }

  document.body.addEventListener("htmx:sseMessage", function (evt) {
    const message = evt.detail;
    if (!message || typeof message.type !== "string") {
      return;
    }
    const id = Number(message.lastEventId);
    if (id > lastSeen) {
      lastSeen = id;
      live.dataset.lastSeenId = String(id);
    }
    document.querySelectorAll("[data-refresh-on]").forEach(function (region) {
      if (region.id && region.dataset.refreshOn.split(" ").includes(message.type)) {
        schedule(region.id);
      }
    });
    trimLog();
  });

  // -- charts --------------------------------------------------------------------------------

  const COLOURS = ["#2458c5", "#c56a24", "#1f7a3d", "#8a2be2"];
  const charts = {};

  async function fetchJson(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) {
      throw new Error(url + ": HTTP " + response.status);
    }
    return response.json();
  }

  function drawLines(id, labels, series) {
    const canvas = document.getElementById(id);
    if (!canvas || !window.Chart) {
      return;
    }
    const chart = charts[id];
    if (chart) {
      chart.data.labels = labels;
      series.forEach(function (s, i) {
        chart.data.datasets[i].data = s.data;
      });
      chart.update();
      return;
    }
    charts[id] = new window.Chart(canvas, {
      type: "line",
      data: {
        labels: labels,
        datasets: series.map(function (s, i) {
          return {
            label: s.label,
            data: s.data,
            borderColor: COLOURS[i],
            backgroundColor: COLOURS[i],
            spanGaps: true,
            tension: 0.2,
            pointRadius: 3,
          };
        }),
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { display: series.length > 1 } },
        scales: { x: { title: { display: true, text: "iteration" } } },
      },
    });
  }

  async function loadCurves() {
    const region = document.getElementById("charts");
    if (!region) {
      return;
    }
    try {
      const data = await fetchJson(region.dataset.curvesUrl);
      const its = data.iterations;
      drawLines("chart-knn", its, [{ label: "kNN accuracy", data: data.knn_accuracy }]);
      drawLines("chart-reward", its, [
        { label: "image reward", data: data.mean_image_reward },
        { label: "concept reward", data: data.mean_concept_reward },
      ]);
      drawLines("chart-loss", its, [{ label: "loss", data: data.loss }]);
      drawLines("chart-kept", its, [{ label: "share kept", data: data.kept_share }]);
      region.dataset.iterations = String(its.length);
      document.getElementById("charts-empty").hidden = its.length > 0;
      document.getElementById("knn-missing").hidden = data.has_knn || its.length === 0;
    } catch (error) {
      console.error(error);
    }
  }

  // -- the concept map -------------------------------------------------------------------------

  let mapChart = null;

  function rewardColour(mu, low, high) {
    if (mu === null || mu === undefined) {
      return "rgba(140, 140, 140, 0.5)";
    }
    const t = high > low ? (mu - low) / (high - low) : 0.5;
    const red = Math.round(36 + t * (200 - 36));
    const green = Math.round(88 + t * (60 - 88));
    const blue = Math.round(197 + t * (40 - 197));
    return "rgba(" + red + ", " + green + ", " + blue + ", 0.8)";
  }

  function selectConcept(point) {
    const region = document.getElementById("concept-map");
    const shown = document.getElementById("map-selected");
    const mu = point.mu === null ? "\u2013" : point.mu.toFixed(3);
    shown.textContent = point.lemma + " (#" + point.index + "), predicted reward " + mu +
      (point.vetoed ? ", vetoed" : "") + (point.queried ? ", queried" : "");
    shown.dataset.conceptIndex = String(point.index);
    htmx.ajax("GET", region.dataset.galleryUrl + "?concept=" + point.index, {
      target: "#gallery",
      swap: "outerHTML",
    });
  }

  async function loadMap() {
    const region = document.getElementById("concept-map");
    const canvas = document.getElementById("map-canvas");
    if (!region || !canvas || !window.Chart) {
      return;
    }
    try {
      const data = await fetchJson(region.dataset.mapUrl);
      const mus = data.points.map(function (p) { return p.mu; }).filter(function (m) { return m !== null; });
      const low = mus.length ? Math.min.apply(null, mus) : 0;
      const high = mus.length ? Math.max.apply(null, mus) : 1;
      const colour = function (ctx) { return rewardColour(ctx.raw && ctx.raw.mu, low, high); };
      const groups = [
        { label: "concepts", keep: function (p) { return !p.queried && !p.vetoed; }, style: "circle", radius: 2 },
        { label: "queried", keep: function (p) { return p.queried && !p.vetoed; }, style: "triangle", radius: 5 },
        { label: "vetoed", keep: function (p) { return p.vetoed; }, style: "crossRot", radius: 6 },
      ];
      const datasets = groups.map(function (g) {
        return {
          label: g.label,
          data: data.points.filter(g.keep),
          pointStyle: g.style,
          pointRadius: g.radius,
          pointHoverRadius: g.radius + 3,
          backgroundColor: colour,
          borderColor: g.label === "vetoed" ? "#b3261e" : (g.label === "queried" ? "#1d2330" : colour),
          borderWidth: g.label === "concepts" ? 0 : 1.5,
        };
      });
      region.dataset.points = String(data.shown);
      document.getElementById("map-note").dataset.total = String(data.total);
      if (mapChart) {
        datasets.forEach(function (d, i) { mapChart.data.datasets[i].data = d.data; });
        mapChart.update();
        return;
      }
      mapChart = new window.Chart(canvas, {
        type: "scatter",
        data: { datasets: datasets },
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          scales: { x: { display: false }, y: { display: false } },
          plugins: {
            tooltip: {
              callbacks: {
                label: function (ctx) {
                  const p = ctx.raw;
                  return p.lemma + " (\u03bc " + (p.mu === null ? "\u2013" : p.mu.toFixed(3)) + ")";
                },
              },
            },
          },
          onClick: function (_event, elements) {
            if (elements.length) {
              const hit = elements[0];
              selectConcept(mapChart.data.datasets[hit.datasetIndex].data[hit.index]);
            }
          },
        },
      });
    } catch (error) {
      console.error(error);
    }
  }

  const chartsRegion = document.getElementById("charts");
  if (chartsRegion) {
    chartsRegion.addEventListener("ie:refresh", loadCurves);
  }
  const mapRegion = document.getElementById("concept-map");
  if (mapRegion) {
    mapRegion.addEventListener("ie:refresh", loadMap);
  }
  loadCurves();
  loadMap();
})();
