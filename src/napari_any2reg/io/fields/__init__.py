"""Writers and readers for what a registration produces besides the frames.

=========================  ==============================================================
``save_displacement``      ``.npy`` ``(N, 2, H, W)`` float32, pixels ``(dy, dx)``, pull-back
                           (exactly the array) or NIfTI (mm, see below)
``read_displacement``      either of the above, or the per-frame ITK fields, back to
                           ``(N, 2, H, W)`` pixels
``save_displacement_itk``  one 2-D ITK vector image per frame (mm)
``save_elastix_transform`` an elastix / transformix parameter file for one ITK field
``read_elastix_transform`` such a parameter file back to a dict
``save_label_stack``       integer labels ``(N, H, W)`` as TIFF (a registration applied to labels)
``read_label_stack``       a 2-D label image or ``(N, H, W)`` label stack (TIFF, NIfTI, .npy)
``save_map_tiff``          float32 map(s) ``(H, W)`` or ``(K, H, W)`` as TIFF with the pixel
                           size in the resolution tags and a JSON description
``read_map_tiff``          ``(array, info)``
=========================  ==============================================================

Displacement in NIfTI
---------------------
Other software expects a NIfTI displacement field in mm with the vector in the 5th dimension
(``intent_code = NIFTI_INTENT_VECTOR``). The file holds ``data[c, r, t, 0, k]`` with
``c`` = column (NIfTI ``i``), ``r`` = row (``j``), ``t`` = frame (as the sequence writer
stores frames, no flips) and ``k = 0`` the x (column) component ``u_dx * dx``, ``k = 1`` the
y (row) component ``u_dy * dy``, in mm; pixdim is ``(dx, dy, 1)``. The field stays a
*pull-back* from the common grid (``registered_i(x) = frame_i(x + u_i(x))``).
:func:`read_displacement` undoes all of this.

Displacement for ITK / SimpleITK (2-D, one file per frame)
----------------------------------------------------------
:func:`save_displacement_itk` writes ``<stem>_frame000.nii.gz`` ... each holding one frame's field
as ``(W, H, 1, 1, 2)`` float32 (``intent_code = NIFTI_INTENT_VECTOR``) with the affine
``diag(-dx, -dy, 1)``. ITK reads that as a **2-D** image with 2 components, spacing
``(dx, dy)``, origin ``(0, 0)`` and *identity* direction (ITK converts the RAS affine to LPS,
which cancels the two minus signs; with ``diag(dx, dy, 1)`` it would see a mirrored direction
and mirror the warp). Component 0 is ``u_dx * dx`` and component 1 is ``u_dy * dy`` in mm, so::

    field = sitk.ReadImage("displacement_frame003.nii.gz", sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    moving = sitk.GetImageFromArray(frames[3]); moving.SetSpacing((dx, dy))   # origin 0, identity
    registered = sitk.Resample(moving, field, transform, sitk.sitkLinear)

reproduces ``registered[3]``: ITK's resampling transform maps each output point ``p`` to the
input point ``p + u(p)``, which is exactly the pull-back convention. The 2-D images live in the
slice's own in-plane axes (an ITK 2-D image cannot be oblique in 3-D); the scanner geometry is
in the JSON sidecar.

In scanner coordinates (a series with a geometry: DICOM, or a NIfTI with an affine)
--------------------------------------------------------------------------------
When the source series has a :class:`~napari_any2reg.core.geometry.SliceGeometry` (passed as
``geometry=``), the fields carry it, so other software applies them in world coordinates to the
images as they lie in the scanner (oblique, offset, anisotropic). The convention is ITK's:
points and vectors in patient **LPS** coordinates, mm; the field is still the pull-back
``registered_i(p) = frame_i(p + d_i(p))`` for every world point ``p`` of the common grid (the
source's pixel grid), with ``d_i(p) = u_dx * dx * row_direction + u_dy * dy * column_direction``
(in the slice plane).

* ``displacement.nii.gz`` (:func:`save_displacement`) holds ``(W, H, 1, N, 3)`` float32: the
  slice grid ``(i, j, k=0)`` with the source's NIfTI affine (the same as ``registered.nii.gz``:
  sform / qform code 1), frames on the 4th (time) axis and the vector ``d`` in dimension 5 as
  3 **LPS** components in mm (what ITK, ANTs and 3D Slicer store in a NIfTI displacement field:
  no RAS flip of the components). SimpleITK reads it as a 4-D image of 3-vectors; frame ``k``
  is ``field[:, :, :, k]``, a 3-D field on the slice's grid.
* the per-frame ITK fields are MetaImage files ``<stem>_frame000.mha``: a 3-D image of size
  ``(W, H, 1)`` with the slice's spacing ``(dx, dy, thickness)``, origin (ImagePositionPatient)
  and direction ``[row_direction, column_direction, normal]``, and ``d`` as 3 LPS components
  (ITK would read a one-slice vector NIfTI as 2-D and lose the plane's orientation; MetaImage
  keeps the 3rd axis). ``sitk.DisplacementFieldTransform(sitk.ReadImage(f, sitk.sitkVectorFloat64))``
  resamples a frame, as a 3-D one-slice image in its scanner geometry, onto the common grid.
* the elastix parameter files describe that 3-D grid (``FixedImageDimension 3``; ``Direction``
  column by column, as elastix reads it).

Without a geometry the fields stay in the slice's own axes, as described above.

Transform parameter files for elastix / transformix
---------------------------------------------------
:func:`save_elastix_transform` writes ``<stem>_frame003.txt`` beside a frame's field: elastix's
``DeformationFieldTransform`` (``(Transform "DeformationFieldTransform")`` with
``(DeformationFieldFileName "...")``, see elastix's
``src/Components/Transforms/DeformationFieldTransform/elxDeformationFieldTransform.h``) plus the
fixed-image grid (size, spacing, origin, direction as ITK sees the field), so
``transformix -tp displacement_frame003.txt -in frame003.nii.gz -out out/`` resamples that raw
frame onto the common grid. transformix maps each fixed (output) point ``p`` to ``p + u(p)`` in
the moving image, the same pull-back as above.

The functions here write to the path they are given (callers make it atomic with
:func:`.atomic_write` or :func:`.atomic_write_folder`).

The subpackage: :mod:`.convention` (the conventions, world vectors, the sidecar),
:mod:`.displacement` (one-file fields), :mod:`.itk` (per-frame ITK fields, MetaImage),
:mod:`.elastix` (parameter files) and :mod:`.images` (label stacks, float maps).
"""

from __future__ import annotations

from .convention import DISPLACEMENT_CONVENTION, WORLD_CONVENTION, displacement_sidecar, plane_components, world_vectors
from .displacement import read_displacement, save_displacement
from .elastix import elastix_transform_text, read_elastix_transform, save_elastix_transform
from .images import MAP_AXES, read_label_stack, read_map_tiff, save_label_stack, save_map_tiff
from .itk import (
    itk_extension,
    itk_frame_paths,
    read_displacement_itk,
    read_metaimage,
    save_displacement_itk,
    write_itk_frame,
    write_itk_world_frame,
    write_metaimage,
)


__all__ = [
    "DISPLACEMENT_CONVENTION",
    "save_displacement",
    "save_displacement_itk",
    "itk_frame_paths",
    "itk_extension",
    "write_itk_world_frame",
    "write_metaimage",
    "read_metaimage",
    "world_vectors",
    "plane_components",
    "WORLD_CONVENTION",
    "read_displacement",
    "read_displacement_itk",
    "save_elastix_transform",
    "elastix_transform_text",
    "read_elastix_transform",
    "save_label_stack",
    "read_label_stack",
    "displacement_sidecar",
    "save_map_tiff",
    "read_map_tiff",
]
