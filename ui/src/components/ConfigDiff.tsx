import ReactDiffViewer, { DiffMethod } from 'react-diff-viewer-continued';

/** The two rendered collector configs side by side, changed lines marked (react-diff-viewer-continued). */
export default function ConfigDiff({
  baseline,
  candidate,
  titles,
}: {
  baseline: string;
  candidate: string;
  titles: [string, string];
}) {
  return (
    <div className="diff">
      <ReactDiffViewer
        oldValue={baseline}
        newValue={candidate}
        splitView
        compareMethod={DiffMethod.LINES}
        leftTitle={titles[0]}
        rightTitle={titles[1]}
        extraLinesSurroundingDiff={4}
        styles={{
          variables: {
            light: {
              diffViewerBackground: '#ffffff',
              addedBackground: '#e6f4ea',
              addedColor: '#0b3d1a',
              removedBackground: '#fde8e8',
              removedColor: '#5c1111',
              wordAddedBackground: '#b7e1c1',
              wordRemovedBackground: '#f5b5b5',
              gutterColor: '#344054',
              codeFoldContentColor: '#344054',
              emptyLineBackground: '#f8f9fb',
            },
          },
          contentText: { fontSize: '12px' },
        }}
      />
    </div>
  );
}
