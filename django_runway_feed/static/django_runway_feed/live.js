/* django-runway-feed admin: keep status badges, progress bars and the summary up to date.
   One request to the admin's live view at a time, the next one 2 s after the previous answer,
   none while the tab is hidden. Values are written with textContent and class names built
   from a fixed pattern: nothing from the server becomes HTML. */
(function () {
    "use strict";
    var script = document.currentScript;
    if (!script || !script.dataset.url || !window.fetch) {
        return;
    }
    var url = script.dataset.url;
    var withSummary = script.dataset.summary === "1";
    var INTERVAL = 2000;
    var timer = null;
    var inFlight = false;

    function cssName(value) {
        return String(value).replace(/[^a-z_]/g, "") || "unknown";
    }

    function taskIds() {
        var seen = {};
        var ids = [];
        document.querySelectorAll("[data-rf-task]").forEach(function (el) {
            var id = el.getAttribute("data-rf-task");
            if (!seen[id]) {
                seen[id] = true;
                ids.push(id);
            }
        });
        return ids;
    }

    function showStatus(cell, task) {
        var badge = cell.querySelector(".rf-badge");
        if (!badge) {
            return;
        }
        badge.className = "rf-badge rf-badge--" + cssName(task.status);
        badge.textContent = task.label;
    }

    function showProgress(cell, task) {
        var bar = cell.querySelector(".rf-progress");
        var fill = cell.querySelector(".rf-progress__fill");
        var label = cell.querySelector(".rf-progress__label");
        if (bar) {
            bar.setAttribute("aria-valuenow", String(task.progress));
        }
        if (fill) {
            fill.className = "rf-progress__fill rf-progress__fill--" + cssName(task.status);
            fill.style.width = task.progress + "%";
        }
        if (label) {
            label.textContent = task.progress + "%";
        }
    }

    function showSummary(summary) {
        Object.keys(summary.counts).forEach(function (status) {
            var el = document.querySelector('[data-rf-count="' + cssName(status) + '"]');
            if (el) {
                el.textContent = String(summary.counts[status]);
            }
        });
        var unfinished = document.querySelector(".rf-summary__unfinished");
        if (unfinished) {
            unfinished.textContent = String(summary.unfinished);
        }
        var last = document.querySelector(".rf-summary__last");
        if (last) {
            last.textContent = summary.last_success;
        }
        var paused = document.querySelector(".rf-summary__paused");
        if (paused) {
            paused.hidden = !summary.paused;
            paused.querySelector(".rf-summary__pause").textContent = summary.paused;
            paused.querySelector(".rf-summary__reason").textContent = summary.pause_reason;
        }
    }

    function apply(data) {
        document.querySelectorAll("[data-rf-task]").forEach(function (cell) {
            var task = data.tasks[cell.getAttribute("data-rf-task")];
            if (!task) {
                return; // deleted or pruned: leave what the page showed
            }
            if (cell.getAttribute("data-rf-field") === "status") {
                showStatus(cell, task);
            } else {
                showProgress(cell, task);
            }
        });
        if (data.summary) {
            showSummary(data.summary);
        }
    }

    function schedule() {
        clearTimeout(timer);
        timer = setTimeout(tick, INTERVAL);
    }

    function tick() {
        if (document.hidden || inFlight) {
            return; // visibilitychange starts it again
        }
        var ids = taskIds();
        if (!ids.length && !withSummary) {
            return;
        }
        var query = "?ids=" + encodeURIComponent(ids.join(",")) + (withSummary ? "&summary=1" : "");
        inFlight = true;
        fetch(url + query, {
            credentials: "same-origin",
            cache: "no-store",
            headers: {"Accept": "application/json"},
        })
            .then(function (response) {
                return response.ok ? response.json() : null;
            })
            .then(function (data) {
                if (data) {
                    apply(data);
                }
            })
            .catch(function () {})
            .then(function () {
                inFlight = false;
                schedule();
            });
    }

    document.addEventListener("visibilitychange", function () {
        if (!document.hidden) {
            schedule();
        }
    });
    schedule();
})();
