// clearbg in the browser: the exported ONNX model run by onnxruntime-web (WebAssembly), no upload.
//
// Preparation and post-processing replicate clearbg's Predictor (inference/predictor.py) so a
// mask here matches Python ONNX Runtime on the same 320x320 input:
//   RGB (transparent photos flattened onto white) -> S x S -> / the image's own max
//   -> (x - mean) / std per channel, NCHW -> sigmoid mask -> min-max stretch per image
//   -> bilinear upsampling -> the default clean-up (inference/cleanup.py) unless unticked.
// A drop shadow (inference/shadow.py's defaults) is optional; matting and decontamination are
// left to the Python library and the server.
// The model's preprocessing contract (input size, resize mode, mean, std) comes from model.json (the ONNX metadata).
let ort;  // onnxruntime-web, imported in main() so a missing runtime is reported on the page

const $ = (id) => document.getElementById(id);
const status = $('status');

function setState(state, message) {
  document.body.dataset.state = state;
  status.textContent = message;
  status.classList.toggle('error', state === 'error');
}

async function loadModel() {
  try {
    ort = await import('./ort/ort.wasm.bundle.min.mjs');
  } catch (err) {
    throw new Error('onnxruntime-web is missing on the server (run ./setup.sh there, then rebuild the page)');
  }
  // More than one thread needs cross-origin isolation (COOP/COEP headers); without it ORT runs one.
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const response = await fetch('model.json');
  if (!response.ok) throw new Error(`model.json: HTTP ${response.status}`);
  const meta = await response.json();
  const session = await ort.InferenceSession.create('model.onnx', { executionProviders: ['wasm'] });
  return { meta, session };
}

// Where the photo lies in the S x S input (the model's preprocessing contract, as Python's
// Preprocess.content_box): all of it for 'stretch', the centred band for 'pad'.
function contentBox(meta, width, height) {
  const size = meta.input_size;
  if (meta.resize !== 'pad') return [0, 0, size, size];
  const scale = Math.min(size / width, size / height);
  const w = Math.max(1, Math.round(width * scale)), h = Math.max(1, Math.round(height * scale));
  const left = Math.floor((size - w) / 2), top = Math.floor((size - h) / 2);
  return [left, top, left + w, top + h];
}

// uint8 RGB (S*S*3, HWC) of the photo resized into S x S by the model's contract.
function resizeToInput(bitmap, meta) {
  const size = meta.input_size;
  const [left, top, right, bottom] = contentBox(meta, bitmap.width, bitmap.height);
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const pad = meta.pad_color || [255, 255, 255];
  ctx.fillStyle = `rgb(${pad[0]}, ${pad[1]}, ${pad[2]})`;
  ctx.fillRect(0, 0, size, size);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'medium';
  ctx.drawImage(bitmap, left, top, right - left, bottom - top);
  const rgba = ctx.getImageData(0, 0, size, size).data;
  const rgb = new Uint8Array(size * size * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return rgb;
}

// Predictor's normalise_inputs: / max over the whole image, then (x - mean) / std; HWC -> CHW.
function normalise(rgb, size, mean, std) {
  let max = 0;
  for (const v of rgb) if (v > max) max = v;
  const scale = Math.max(max, 1e-6);
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) out[c * plane + p] = (rgb[p * 3 + c] / scale - mean[c]) / std[c];
  }
  return out;
}

// Predictor's per-image min-max stretch of the sigmoid map.
function stretch(prob) {
  let lo = Infinity, hi = -Infinity;
  for (const v of prob) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const range = Math.max(hi - lo, 1e-8);
  return prob.map((v) => (v - lo) / range);
}

// clearbg.inference.cleanup's default on the 8-bit alpha: hardening (alpha below 0.2 -> 0, above
// 0.8 -> 1, stretched between; 0.5 stays, so the outline does not move) and a narrow soft band
// (farther than 0.5 % of the long side outside the outline, alpha is exactly 0).
const RAMP = [0.2, 0.8], BAND = 0.005;

function cleanAlpha(alpha, width, height) {
  const radius = Math.max(1, Math.round(BAND * Math.max(width, height)));
  // Summed-area table of the product (alpha > 0.5) with a zero first row and column: the
  // count in any window in O(1), so the band costs the same at any width.
  const w1 = width + 1;
  const table = new Int32Array(w1 * (height + 1));
  for (let y = 0; y < height; y++) {
    let row = 0;
    for (let x = 0; x < width; x++) {
      row += alpha[y * width + x] > 127 ? 1 : 0;
      table[(y + 1) * w1 + x + 1] = table[y * w1 + x + 1] + row;
    }
  }
  const out = new Uint8ClampedArray(alpha.length);
  for (let y = 0; y < height; y++) {
    const y0 = Math.max(0, y - radius), y1 = Math.min(height, y + radius + 1);
    for (let x = 0; x < width; x++) {
      const x0 = Math.max(0, x - radius), x1 = Math.min(width, x + radius + 1);
      const product = table[y1 * w1 + x1] - table[y0 * w1 + x1] - table[y1 * w1 + x0] + table[y0 * w1 + x0];
      const i = y * width + x;
      if (product === 0) out[i] = 0;
      else out[i] = Math.round(Math.min(1, Math.max(0, (alpha[i] / 255 - RAMP[0]) / (RAMP[1] - RAMP[0]))) * 255);
    }
  }
  return out;
}

// The cutout at the photo's full resolution: the mask's content box upsampled with bilinear
// smoothing, cleaned up unless asked not to; plus the product's box (alpha > 0.5) for the shadow.
function cutout(bitmap, mask, meta, clean) {
  const size = meta.input_size;
  const [left, top, right, bottom] = contentBox(meta, bitmap.width, bitmap.height);
  const width = bitmap.width, height = bitmap.height;
  const small = new OffscreenCanvas(size, size);
  const maskImage = new ImageData(size, size);
  for (let p = 0; p < mask.length; p++) maskImage.data[p * 4 + 3] = Math.round(Math.min(1, Math.max(0, mask[p])) * 255);
  small.getContext('2d').putImageData(maskImage, 0, 0);
  const scaled = new OffscreenCanvas(width, height);
  const sctx = scaled.getContext('2d', { willReadFrequently: true });
  sctx.imageSmoothingEnabled = true;
  sctx.imageSmoothingQuality = 'low';  // bilinear
  sctx.drawImage(small, left, top, right - left, bottom - top, 0, 0, width, height);
  const upsampled = sctx.getImageData(0, 0, width, height).data;
  let alpha = new Uint8ClampedArray(width * height);
  for (let i = 0; i < alpha.length; i++) alpha[i] = upsampled[i * 4 + 3];
  if (clean) alpha = cleanAlpha(alpha, width, height);
  const full = document.createElement('canvas');
  full.width = width; full.height = height;
  const ctx = full.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const pixels = ctx.getImageData(0, 0, width, height);
  let box = null;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const a = alpha[y * width + x];
      pixels.data[(y * width + x) * 4 + 3] = a;
      if (a > 127) box = box ? [Math.min(box[0], x), Math.min(box[1], y), Math.max(box[2], x), Math.max(box[3], y)]
                             : [x, y, x, y];
    }
  }
  ctx.putImageData(pixels, 0, 0);
  return { canvas: full, box };
}

// The drop shadow of clearbg.inference.shadow with its defaults: black at 0.5 opacity, blurred
// by 3 % of the product's height (canvas blur is twice the Gaussian's sigma), offset 2 % right
// and 3 % down.
function draw(canvas, result, background, shadow) {
  const { canvas: full, box } = result;
  canvas.width = full.width; canvas.height = full.height;
  const ctx = canvas.getContext('2d');
  if (background) { ctx.fillStyle = background; ctx.fillRect(0, 0, full.width, full.height); }
  if (shadow && box) {
    const h = box[3] - box[1] + 1;
    ctx.shadowColor = 'rgba(0, 0, 0, 0.5)';
    ctx.shadowBlur = 2 * 0.03 * h;
    ctx.shadowOffsetX = Math.round(0.02 * h);
    ctx.shadowOffsetY = Math.round(0.03 * h);
  }
  ctx.drawImage(full, 0, 0);
  return canvas;
}

let last = null, cutoutName = 'cutout.png';  // the last photo's bitmap, mask and cutout

// Draw (or redraw, when an option changes) both views from the last photo's mask.
function render() {
  const clean = $('clean').checked, shadow = $('shadow').checked;
  if (last.clean !== clean) { last.result = cutout(last.bitmap, last.mask, last.meta, clean); last.clean = clean; }
  draw($('on-checker'), last.result, null, shadow);
  draw($('on-white'), last.result, '#fff', shadow);
}

async function removeBackground(model, file) {
  setState('working', `Removing the background of ${file.name}…`);
  const started = performance.now();
  const bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  const size = model.meta.input_size;
  const rgb = resizeToInput(bitmap, model.meta);
  const input = new ort.Tensor('float32', normalise(rgb, size, model.meta.mean, model.meta.std), [1, 3, size, size]);
  const inferStart = performance.now();
  const outputs = await model.session.run({ [model.meta.input_name]: input });
  const inferenceMs = performance.now() - inferStart;
  const mask = stretch(outputs[model.meta.output_name].data);
  last = { bitmap, mask, meta: model.meta, clean: null, result: null };
  render();
  const ms = performance.now() - started;
  $('result').hidden = false;
  $('download').disabled = false;
  cutoutName = file.name.replace(/\.[^.]*$/, '') + '-cutout.png';
  const time = $('time');
  time.textContent = `${Math.round(ms)} ms per image (network ${Math.round(inferenceMs)} ms, ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? 's' : ''})`;
  time.dataset.ms = ms.toFixed(1);
  // Read back by the end-to-end test (tests/test_web.py) and handy in the console.
  window.clearbgLast = { mask: Array.from(mask), input: Array.from(rgb), size, ms, inferenceMs,
                         width: bitmap.width, height: bitmap.height };
  setState('done', `Done: ${file.name} (${bitmap.width}x${bitmap.height}).`);
}

async function main() {
  let model;
  try {
    model = await loadModel();
  } catch (err) {
    setState('error', `Could not load the model: ${err.message}`);
    return;
  }
  setState('ready', `Ready (${model.meta.model}). Drop a photo.`);
  const run = (file) => {
    if (!file) return;
    removeBackground(model, file).catch((err) => setState('error', `Could not process ${file.name}: ${err.message}`));
  };
  $('file').addEventListener('change', (event) => run(event.target.files[0]));
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    run(event.dataTransfer.files[0]);
  });
  for (const id of ['clean', 'shadow']) $(id).addEventListener('change', () => { if (last) render(); });
  $('download').addEventListener('click', () => {
    // What the checkerboard view shows: the cutout, with its shadow when that is on.
    $('on-checker').toBlob((blob) => {
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      link.download = cutoutName;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    }, 'image/png');
  });
}

main();
