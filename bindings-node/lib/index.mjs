// index.mjs: the ESM entry: the same objects as the CommonJS entry (one addon instance).
import kernelhost from './index.js';

export const {
  KernelManager, Kernel, Comm, JupyterServer, KernelMode, KernelEvents, ErrorCodes,
} = kernelhost;
export default kernelhost;
