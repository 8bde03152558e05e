/**
 * Resumable transfers: a body stream that resumes after breaks, downloads that continue after a
 * restart, multipart uploads that send only the missing parts, with progress, speed and ETA.
 * @packageDocumentation
 */
export {
  ProgressTracker,
  showProgress,
  describeProgress,
  type ProgressOptions,
  type ProgressSnapshot,
} from './progress.js';
export type { TransferPolicy } from './policy.js';
export {
  resumingGet,
  type RangeRequest,
  type RawResponse,
  type ResumingGetOptions,
  type ResumingGetResult,
} from './resuming-stream.js';
export { downloadFile, type DownloadOptions, type DownloadResult } from './download.js';
export { uploadFile, type UploadOptions, type UploadResult } from './multipart-upload.js';
export {
  S3Client,
  credentialsFromEnv,
  s3Error,
  type S3ClientOptions,
  type S3Credentials,
  type S3Request,
  type S3Response,
} from './s3-client.js';
