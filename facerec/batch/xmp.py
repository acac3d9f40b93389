"""XMP sidecars with face regions (Metadata Working Group regions), which digiKam, Immich and Lightroom read.

One `PHOTO.EXT.xmp` per photo that holds a named face (the user's name, else the gallery's answer), in the
folder given, or beside the photo. Areas are normalised: centre x, y and width, height over the photo.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from facerec.store.batch import FaceRows

TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="facerec">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#">
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions stDim:w="{w}" stDim:h="{h}" stDim:unit="pixel"/>
    <mwg-rs:RegionList>
     <rdf:Bag>
{regions}
     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""

REGION = """      <rdf:li>
       <rdf:Description mwg-rs:Name={name} mwg-rs:Type="Face">
        <mwg-rs:Area stArea:x="{x:.6f}" stArea:y="{y:.6f}" stArea:w="{aw:.6f}" stArea:h="{ah:.6f}" stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>"""


def write_sidecars(faces: FaceRows, sizes: dict[int, tuple[int, int]], out_dir: str | Path | None = None) -> list[Path]:
    """Write one sidecar per photo with named faces; returns the files written."""
    by_photo: dict[int, list[int]] = {}
    for i in range(len(faces)):
        if faces.person[i] or faces.match[i]:
            by_photo.setdefault(int(faces.file_ids[i]), []).append(i)
    written = []
    for file_id, rows in sorted(by_photo.items()):
        w, h = sizes[file_id]
        regions = []
        for i in rows:
            x1, y1, x2, y2 = (min(max(v, 0.0), lim) for v, lim in zip(faces.boxes[i], (w, h, w, h)))
            regions.append(REGION.format(name=quoteattr(faces.person[i] or faces.match[i]), x=(x1 + x2) / 2 / w,
                                         y=(y1 + y2) / 2 / h, aw=(x2 - x1) / w, ah=(y2 - y1) / h))
        photo = Path(faces.paths[rows[0]])
        target = (Path(out_dir) if out_dir else photo.parent) / (photo.name + ".xmp")
        target.write_text(TEMPLATE.format(w=w, h=h, regions="\n".join(regions)), encoding="utf-8")
        written.append(target)
    return written
