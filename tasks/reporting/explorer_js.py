"""The explorer page's gallery: the few lines of script and style that Bokeh's views call.

The plots, tables and hovers are Bokeh's; this only fills the image panel from window.OVERLAP
(thumbs, captions, cells, pairs), so every view shows its images in one place.
"""

PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 0; }
main { margin-right: 380px; padding: 0 16px 32px; overflow-x: auto; }
#gallery { position: fixed; top: 0; right: 0; width: 360px; height: 100vh; overflow-y: auto;
  box-sizing: border-box; padding: 8px 12px; border-left: 1px solid #ccc; background: #fafafa; }
#gallery h3 { margin: 8px 0 4px; font-size: 14px; }
#gallery figure { display: inline-block; margin: 2px; text-align: center; }
#gallery figcaption { font-size: 10px; color: #444; }
#gallery img, .overlap-thumb { width: 64px; height: 64px; image-rendering: pixelated;
  object-fit: contain; }
.overlap-tip { width: 180px; font-size: 12px; }
.note { color: #555; }
"""

GALLERY_JS = """
(function () {
  const O = window.OVERLAP;
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;',
      '"': '&quot;', "'": '&#39;'})[c]);
  }
  function figureOf(id, label) {
    const src = O.thumbs[id];
    if (!src) return '';
    return '<figure><img data-sid="' + id + '" src="' + src + '" title="' +
      esc(O.captions[id] || id) + '"><figcaption>' + esc(label) + '</figcaption></figure>';
  }
  function show(title, groups) {
    let out = '<h2>' + esc(title) + '</h2>';
    for (const g of groups) {
      out += '<section class="group" data-group="' + esc(g.key) + '"><h3>' + esc(g.title) +
        '</h3>' + g.items.map((it) => figureOf(it[0], it[1])).join('') +
        (g.items.length ? '' : '<p>No image embedded for this.</p>') + '</section>';
    }
    document.getElementById('gallery').innerHTML = out;
  }
  window.overlapCell = function (t, p) {
    const ids = O.cells[t + ',' + p] || [];
    const n = O.counts[t][p], names = O.names;
    const title = names[t] + ' predicted as ' + names[p] + ' (' + n + ' test images)';
    const shown = ids.filter((id) => O.thumbs[id]);
    const group = {key: 'cell', title: shown.length + ' of ' + n + ' shown',
      items: shown.map((id) => [id, 'id ' + id])};
    if (t === p) group.title = 'Correct predictions: pick an off-diagonal cell for mistakes.';
    show(title, [group]);
  };
  window.overlapPair = function (a, b) {
    const pair = O.pairs[a + '|' + b] || O.pairs[b + '|' + a];
    if (!pair) {
      show(a + ' / ' + b, [{key: 'none', title: 'Not a flagged overlap pair.', items: []}]);
      return;
    }
    const groups = [pair.a, pair.b].map((own) => {
      const other = own === pair.a ? pair.b : pair.a;
      return {key: own, title: own + ': closest to ' + other + ' first (margin = cos own - ' +
        'cos other)', items: pair.sides[own].map((r) => [r[0], 'margin ' + r[1].toFixed(3)])};
    });
    show(pair.a + ' / ' + pair.b + ' (cosine ' + pair.cosine.toFixed(3) + ')', groups);
  };
  window.overlapSample = function (id) {
    show(O.captions[id] || ('id ' + id), [{key: 'sample', title: '', items: [[id, 'id ' + id]]}]);
  };
})();
"""
