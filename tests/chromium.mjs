// The Chromium every browser test and benchmark launches: Debian's, with the flags this
// machine needs as root and offline, plus WebGPU (SwiftShader when there is no GPU).
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--enable-unsafe-webgpu',
];
