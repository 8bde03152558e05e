/**
 * What keel's s3rver patches (packages/gateway/src/demo/s3rver-fixes.ts) make the test and demo
 * origin answer, checked with the AWS SDK as a client sees it: ListObjectVersions as S3 answers it
 * for a bucket without versioning, and S3's errors for multipart completions s3rver cannot do.
 */
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
  type S3ServiceException,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { originClient } from './gateway-protocol-support.js';
import { startS3Origin, type S3Origin } from './s3-origin.js';

let origin: S3Origin;
let s3: S3Client;
const KEYS = ['a.txt', 'dir/b.txt', 'dir/c.txt', 'dir/sub/d.txt', 'e.txt'];

async function failure(p: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as S3ServiceException;
    return { name: e.name, status: e.$metadata.httpStatusCode };
  }
  throw new Error('expected the request to fail');
}

beforeAll(async () => {
  origin = await startS3Origin(['versions', 'multipart']);
  s3 = originClient(origin);
  for (const key of KEYS) await s3.send(new PutObjectCommand({ Bucket: 'versions', Key: key, Body: key }));
});

afterAll(async () => {
  s3.destroy();
  await origin.close();
});

describe('ListObjectVersions on the s3rver origin', () => {
  it('lists each object once as its latest version, with version id null, as an unversioned bucket does', async () => {
    const listed = await s3.send(new ListObjectVersionsCommand({ Bucket: 'versions' }));
    const objects = await s3.send(new ListObjectsV2Command({ Bucket: 'versions' }));
    expect(listed.Versions?.map((v) => v.Key)).toEqual(KEYS);
    for (const v of listed.Versions ?? []) {
      const object = objects.Contents?.find((o) => o.Key === v.Key);
      expect(v).toMatchObject({ VersionId: 'null', IsLatest: true, ETag: object?.ETag, Size: object?.Size });
      expect(v.LastModified?.toISOString()).toBe(object?.LastModified?.toISOString());
    }
    expect(listed.DeleteMarkers ?? []).toEqual([]);
    expect(listed.IsTruncated).toBe(false);
  });

  it('takes prefix and delimiter, and pages with key markers and max-keys counting common prefixes', async () => {
    const top = await s3.send(new ListObjectVersionsCommand({ Bucket: 'versions', Delimiter: '/' }));
    expect(top.Versions?.map((v) => v.Key)).toEqual(['a.txt', 'e.txt']);
    expect(top.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['dir/']);

    const inDir = await s3.send(
      new ListObjectVersionsCommand({ Bucket: 'versions', Prefix: 'dir/', Delimiter: '/' }),
    );
    expect(inDir.Versions?.map((v) => v.Key)).toEqual(['dir/b.txt', 'dir/c.txt']);
    expect(inDir.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['dir/sub/']);

    const names: string[] = [];
    let marker: { KeyMarker?: string | undefined; VersionIdMarker?: string | undefined } = {};
    for (let page = 0; page < KEYS.length; page++) {
      const r = await s3.send(
        new ListObjectVersionsCommand({ Bucket: 'versions', Delimiter: '/', MaxKeys: 2, ...marker }),
      );
      const entries = [
        ...(r.Versions ?? []).map((v) => v.Key),
        ...(r.CommonPrefixes ?? []).map((p) => p.Prefix),
      ];
      expect(entries.length).toBeLessThanOrEqual(2);
      names.push(...(entries as string[]));
      if (!r.IsTruncated) break;
      expect(r.NextVersionIdMarker).toBe('null');
      marker = { KeyMarker: r.NextKeyMarker, VersionIdMarker: r.NextVersionIdMarker };
    }
    expect(names.sort()).toEqual(['a.txt', 'dir/', 'e.txt']);
  });

  it('refuses a version id marker that names a version S3 could not have', async () => {
    expect(
      await failure(
        s3.send(
          new ListObjectVersionsCommand({ Bucket: 'versions', KeyMarker: 'a.txt', VersionIdMarker: 'v2' }),
        ),
      ),
    ).toEqual({ name: 'InvalidArgument', status: 400 });
    expect(
      await failure(s3.send(new ListObjectVersionsCommand({ Bucket: 'versions', VersionIdMarker: 'null' }))),
    ).toEqual({ name: 'InvalidArgument', status: 400 });
    expect(await failure(s3.send(new ListObjectVersionsCommand({ Bucket: 'missing' })))).toEqual({
      name: 'NoSuchBucket',
      status: 404,
    });
  });

  it('empties a bucket the way clients clean up: list the versions, delete them', async () => {
    await s3.send(new PutObjectCommand({ Bucket: 'multipart', Key: 'left-over', Body: 'x' }));
    const listed = await s3.send(new ListObjectVersionsCommand({ Bucket: 'multipart' }));
    await s3.send(
      new DeleteObjectsCommand({
        Bucket: 'multipart',
        Delete: { Objects: (listed.Versions ?? []).map((v) => ({ Key: v.Key as string })) },
      }),
    );
    expect((await s3.send(new ListObjectVersionsCommand({ Bucket: 'multipart' }))).Versions ?? []).toEqual(
      [],
    );
  });
});

describe('multipart completions on the s3rver origin', () => {
  async function uploadWithOnePart(key: string): Promise<{ uploadId: string; etag: string }> {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'multipart', Key: key }));
    const { ETag } = await s3.send(
      new UploadPartCommand({ Bucket: 'multipart', Key: key, UploadId, PartNumber: 1, Body: 'part one' }),
    );
    return { uploadId: UploadId as string, etag: ETag as string };
  }

  it('answers a part that was never uploaded, or one with another ETag, with InvalidPart, and goes on serving', async () => {
    const { uploadId, etag } = await uploadWithOnePart('missing-part');
    const complete = (parts: { PartNumber: number; ETag: string }[]): Promise<unknown> =>
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: 'multipart',
          Key: 'missing-part',
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
        }),
      );
    expect(
      await failure(
        complete([
          { PartNumber: 1, ETag: etag },
          { PartNumber: 2, ETag: etag },
        ]),
      ),
    ).toEqual({ name: 'InvalidPart', status: 400 });
    expect(await failure(complete([{ PartNumber: 1, ETag: '"0123456789abcdef0123456789abcdef"' }]))).toEqual({
      name: 'InvalidPart',
      status: 400,
    });
    // The upload is still there, and completes with the right list.
    await complete([{ PartNumber: 1, ETag: etag }]);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'multipart', Key: 'missing-part' }));
    expect(await got.Body?.transformToString()).toBe('part one');
  });

  it('answers parts out of order with InvalidPartOrder, and an unknown upload with NoSuchUpload', async () => {
    const { uploadId, etag } = await uploadWithOnePart('order');
    const complete = (id: string, parts: { PartNumber: number; ETag: string }[]): Promise<unknown> =>
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: 'multipart',
          Key: 'order',
          UploadId: id,
          MultipartUpload: { Parts: parts },
        }),
      );
    expect(
      await failure(
        complete(uploadId, [
          { PartNumber: 2, ETag: etag },
          { PartNumber: 1, ETag: etag },
        ]),
      ),
    ).toEqual({ name: 'InvalidPartOrder', status: 400 });
    for (const unknown of ['0123456789abcdef0123456789abcdef', '../../etc'])
      expect(await failure(complete(unknown, [{ PartNumber: 1, ETag: etag }]))).toEqual({
        name: 'NoSuchUpload',
        status: 404,
      });
  });
});
